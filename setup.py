"""Builds the optional compiled relay (proxy/wire/_relay.pyx); everything else is in pyproject.toml.

`optional=True`: where the extension cannot be built (no C compiler), the install still succeeds
and pgkeep runs its pure-Python path (proxy.wire.framing.RELAY says which one is in use)."""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [Extension("proxy.wire._relay", ["proxy/wire/_relay.pyx"], optional=True)]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}, quiet=True))
