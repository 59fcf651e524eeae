"""focuskern: fused kernels that steer LLM generation toward key entities.

The C++/CUDA extension (``focuskern._C`` from ``csrc/``) is built here once it exists; until then the
package is pure Python plus Triton kernels.
"""
from setuptools import find_packages, setup

setup(
    name="focuskern",
    version="0.1.0",
    description="Fused logits/attention focus kernels for LLM generation (PyTorch + Triton)",
    packages=find_packages(include=["focuskern", "focuskern.*"]),
    python_requires=">=3.10",
    # torch is deliberately unpinned here: the Makefile installs the exact build (see constraints.txt)
    # and a range would let pip pull a newer CUDA wheel.
    install_requires=["torch", "transformers>=5.0"],
    extras_require={"triton": ["triton"], "gguf": ["gguf", "accelerate"]},
    entry_points={"console_scripts": ["focuskern=focuskern.__main__:main"]},
)
