"""The optional C accelerator of the pixel path's parsers (tracker/http/_lean.c).

Everything else is in pyproject.toml. Without a C compiler the install goes on without it
(``optional=True``) and the pure-Python parsers serve: the same answers, more CPU per pixel.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tracker.http._lean",
            ["tracker/http/_lean.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
