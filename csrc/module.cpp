// The Python module focuskern._C: loading it registers the native ops (see focus_cpu.cpp /
// focus_cuda.cu); `has_cuda` says whether the CUDA kernels were compiled in.
#include <Python.h>

#ifndef FOCUSKERN_WITH_CUDA
#define FOCUSKERN_WITH_CUDA 0
#endif

static struct PyModuleDef focuskern_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&focuskern_module);
  if (module != nullptr) PyModule_AddIntConstant(module, "has_cuda", FOCUSKERN_WITH_CUDA);
  return module;
}
