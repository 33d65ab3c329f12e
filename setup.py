"""Package discovery for the one ``ocrstream.*`` namespace; everything else lives in pyproject.toml.

``services/`` and ``kernels/`` sit at the top of the repo but import as ``ocrstream.services`` and
``ocrstream.kernels`` (``package-dir`` in pyproject.toml). setuptools' ``packages.find`` names a
package after its folder, so it never lists the mapped trees: wheels would lack them and the
editable finder would not map them. Here each tree is found and given its prefix.
"""

from setuptools import find_namespace_packages, setup

# (import prefix, folder) pairs; must agree with package-dir in pyproject.toml.
_TREES = (("ocrstream", "ocrstream"), ("ocrstream.services", "services"), ("ocrstream.kernels", "kernels"))


def _packages() -> list[str]:
    found: list[str] = []
    for prefix, folder in _TREES:
        found.append(prefix)
        found += [f"{prefix}.{name}" for name in find_namespace_packages(folder, exclude=["*__pycache__*"])]
    return found


setup(packages=_packages())
