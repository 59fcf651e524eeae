// The Python module focuskern._C: loading it registers the native ops (see focus_cpu.cpp /
// focus_cuda.cu); `has_cuda` says whether the CUDA kernels were compiled in; `focus_logits_check`
// is the CPU fast path of focuskern.ops.focus_logits_.
#include <Python.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/record_function.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/python_variable.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <utility>
#include <vector>

#include "compile_cpu.h"
#include "focus_cpu.h"

#ifndef FOCUSKERN_WITH_CUDA
#define FOCUSKERN_WITH_CUDA 0
#endif

namespace {

// A plain dense CPU tensor, and the thread-local keys of plain eager mode.  Anything else (autograd
// through a tensor that requires grad, subclasses, dispatch or torch-function modes, functorch,
// autocast, inference tensors outside inference mode) is left to the dispatcher.
const c10::DispatchKeySet kPlainCpu{c10::DispatchKey::CPU, c10::DispatchKey::ADInplaceOrView,
                                    c10::DispatchKey::AutogradCPU, c10::DispatchKey::AutocastCPU};
const c10::DispatchKeySet kPlainTls{c10::DispatchKey::BackendSelect, c10::DispatchKey::ADInplaceOrView};

bool plain_eager_mode() {
  return kPlainTls.isSupersetOf(c10::impl::tls_local_dispatch_key_set().included_) &&
         !at::impl::torch_function_mode_enabled();
}

// FOCUSKERN_BACKEND unset, empty, "auto" or "cpp": backend="auto" runs the cpp op on CPU tensors.
bool auto_is_cpp() {
  const char* forced = std::getenv("FOCUSKERN_BACKEND");
  return forced == nullptr || !*forced || !std::strcmp(forced, "auto") || !std::strcmp(forced, "cpp");
}

// Whether the entry point `fn` got `want` arguments; else a TypeError saying so.
bool takes(const char* fn, Py_ssize_t nargs, Py_ssize_t want) {
  if (nargs == want) return true;
  PyErr_Format(PyExc_TypeError, "%s takes %zd arguments, got %zd", fn, want, nargs);
  return false;
}

// focus_logits_check(logits, row_offsets, token_ids, token_bias, alpha, decay, step, n_kinds, mode)
// -> int.  Every argument check of focus_logits_ in one native pass (focus_logits_check_cpu), called
// without the dispatcher's per-argument boxing (~3 us, as much as the op at small sizes).  mode 0:
// check only; 1: check, then apply the cpp op; 2: as 1 where FOCUSKERN_BACKEND lets backend="auto"
// take cpp.  Returns 0 (good; applied if asked), 1 + the position of the first bad argument, or -1:
// not looked at (not plain CPU tensors, not plain eager mode, or mode 2 with another backend forced)
// -- the caller then takes the dispatcher path.
PyObject* focus_logits_check(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!takes("focus_logits_check", nargs, 9)) return nullptr;
  const long n_kinds = PyLong_AsLong(args[7]), mode = PyLong_AsLong(args[8]);
  if (PyErr_Occurred()) return nullptr;
  if ((mode == 2 && !auto_is_cpp()) || !plain_eager_mode()) return PyLong_FromLong(-1);
  std::array<const at::Tensor*, 7> t{};
  for (size_t i = 0; i < t.size(); ++i) {
    if (!THPVariable_CheckExact(args[i])) return PyLong_FromLong(-1);
    t[i] = &THPVariable_Unpack(args[i]);
    if (!kPlainCpu.isSupersetOf(t[i]->key_set()) || t[i]->requires_grad()) return PyLong_FromLong(-1);
  }
  const at::Tensor& logits = *t[0];
  if (logits.is_inference() && !c10::InferenceMode::is_enabled()) return PyLong_FromLong(-1);
  const bool apply = mode != 0;
  int64_t code = 0;
  std::exception_ptr error;
  // Other Python threads run meanwhile where the call can be long (as around ATen ops); a short one
  // keeps the GIL (releasing and taking it back costs about as much as the op, ~0.5 us).
  const bool release = logits.numel() >= (int64_t{1} << 20) || t[2]->numel() >= (int64_t{1} << 16);
  PyThreadState* saved = release ? PyEval_SaveThread() : nullptr;
  try {
    RECORD_FUNCTION(apply ? "focuskern::focus_logits_cpp_" : "focuskern::focus_logits_check", std::vector<c10::IValue>());
    code = focuskern::focus_logits_check_cpu(logits, *t[1], *t[2], *t[3], *t[4], *t[5], *t[6], n_kinds, apply);
    if (code == 0 && apply && !logits.is_inference()) logits.unsafeGetTensorImpl()->bump_version();
  } catch (...) {
    error = std::current_exception();
  }
  if (saved != nullptr) PyEval_RestoreThread(saved);
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
      PyErr_SetString(PyExc_RuntimeError, "focus_logits_check: unknown C++ exception");
    }
    return nullptr;
  }
  return PyLong_FromLongLong(code);
}

// A vector's data as a 1-D tensor (no copy: the tensor owns the vector).
template <typename T>
PyObject* wrap(std::vector<T>&& v) {
  auto* owned = new std::vector<T>(std::move(v));
  at::Tensor t = at::from_blob(owned->data(), {static_cast<int64_t>(owned->size())},
                               [owned](void*) { delete owned; }, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  return THPVariable_Wrap(t);
}

// Unpacks args[0:N] as contiguous 1-D int64 CPU tensors into `t`, or sets a TypeError naming `fn`.
template <size_t N>
bool int64_tensors(const char* fn, PyObject* const* args, std::array<at::Tensor, N>& t) {
  for (size_t i = 0; i < N; ++i) {
    if (!THPVariable_Check(args[i])) {
      PyErr_Format(PyExc_TypeError, "%s: argument %zu is not a tensor", fn, i);
      return false;
    }
    t[i] = THPVariable_Unpack(args[i]);
    if (t[i].scalar_type() != at::kLong || !t[i].is_cpu() || !t[i].is_contiguous() || t[i].dim() != 1) {
      PyErr_Format(PyExc_TypeError, "%s: argument %zu must be a contiguous 1-D int64 CPU tensor", fn, i);
      return false;
    }
  }
  return true;
}

// Runs f() without the GIL (compiling blocks no other Python thread); false, a ValueError set, if it threw.
template <typename F>
bool without_gil(F&& f) {
  std::exception_ptr error;
  PyThreadState* saved = PyEval_SaveThread();
  try {
    f();
  } catch (...) {
    error = std::current_exception();
  }
  PyEval_RestoreThread(saved);
  if (!error) return true;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  }
  return false;
}

constexpr const char* kVocabTrie = "focuskern._C.VocabTrie";

// vocab_trie(tok_off, tok_sym, tokens) -> an opaque handle (a capsule) to the trie of the tokens that
// token edges may carry, for build_automaton; the caller keeps it with its token table.
PyObject* vocab_trie(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!takes("vocab_trie", nargs, 3)) return nullptr;
  std::array<at::Tensor, 3> t;
  if (!int64_tensors("vocab_trie", args, t)) return nullptr;
  focuskern::VocabTrie* vocab = nullptr;
  if (!without_gil([&] {
        vocab = focuskern::build_vocab_trie(t[0].data_ptr<int64_t>(), t[1].data_ptr<int64_t>(),
                                            t[2].data_ptr<int64_t>(), t[2].numel());
      }))
    return nullptr;
  return PyCapsule_New(vocab, kVocabTrie, [](PyObject* capsule) {
    focuskern::free_vocab_trie(static_cast<focuskern::VocabTrie*>(PyCapsule_GetPointer(capsule, kVocabTrie)));
  });
}

// build_automaton(sym, off, entity, vocab) -> (sym, child_lo, fail, through_off, through, out_off, out,
// edge_u, edge_token, edge_child, max_depth): the native path of focuskern.automaton.build_automaton
// (compile_cpu.cpp); sym/off/entity contiguous int64 CPU tensors, vocab a vocab_trie handle (None: no
// token edges); results int64 (node arrays, offsets) and int32 (lists, edges).
PyObject* build_automaton(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!takes("build_automaton", nargs, 4)) return nullptr;
  std::array<at::Tensor, 3> t;
  if (!int64_tensors("build_automaton", args, t)) return nullptr;
  const focuskern::VocabTrie* vocab = nullptr;
  if (args[3] != Py_None) {
    vocab = static_cast<const focuskern::VocabTrie*>(PyCapsule_GetPointer(args[3], kVocabTrie));
    if (vocab == nullptr) return nullptr;  // not a vocab_trie handle: PyCapsule_GetPointer raised
  }
  if (t[1].numel() < 1 || t[2].numel() != t[1].numel() - 1) {
    PyErr_SetString(PyExc_ValueError, "build_automaton: off must hold one more entry than entity");
    return nullptr;
  }
  focuskern::Automaton a;
  if (!without_gil([&] {
        a = focuskern::build_automaton_cpu(t[0].data_ptr<int64_t>(), t[1].data_ptr<int64_t>(), t[2].numel(),
                                           t[2].data_ptr<int64_t>(), vocab);
      }))
    return nullptr;
  return Py_BuildValue("(NNNNNNNNNNL)", wrap(std::move(a.sym)), wrap(std::move(a.child_lo)), wrap(std::move(a.fail)),
                       wrap(std::move(a.through_off)), wrap(std::move(a.through)), wrap(std::move(a.out_off)),
                       wrap(std::move(a.out)), wrap(std::move(a.edge_u)), wrap(std::move(a.edge_token)),
                       wrap(std::move(a.edge_child)), static_cast<long long>(a.max_depth));
}

PyMethodDef methods[] = {
    {"build_automaton", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(build_automaton)),
     METH_FASTCALL, "The native path of focuskern.automaton.build_automaton (see csrc/module.cpp)."},
    {"vocab_trie", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(vocab_trie)),
     METH_FASTCALL, "A vocabulary's trie for build_automaton's token edges (see csrc/module.cpp)."},
    {"focus_logits_check", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(focus_logits_check)),
     METH_FASTCALL, "The CPU fast path of focuskern.ops.focus_logits_ (see csrc/module.cpp)."},
    {nullptr, nullptr, 0, nullptr}};

struct PyModuleDef focuskern_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&focuskern_module);
  if (module != nullptr) PyModule_AddIntConstant(module, "has_cuda", FOCUSKERN_WITH_CUDA);
  return module;
}
