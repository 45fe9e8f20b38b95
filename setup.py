"""Package discovery for the user's layout, which pyproject.toml alone cannot express.

The top-level folders install under ``shipmap.``: ``engine/`` is ``shipmap.engine`` and so on. setuptools'
``packages.find`` would name them ``engine.*``, so each folder's subpackages are found here and prefixed;
a subpackage added later ships without anyone editing a list. Everything else is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

PACKAGE_DIRS = {
    "shipmap.engine": "engine",
    "shipmap.connectors": "connectors",
    "shipmap.mappings": "mappings",
}


def discover() -> list[str]:
    # Namespace discovery: folders of data only (mappings/shopify, static assets) are packages too, so their
    # files ship as package data.
    return [
        name
        for package, folder in PACKAGE_DIRS.items()
        for name in (
            package,
            *(f"{package}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"])),
        )
    ]


setup(package_dir=PACKAGE_DIRS, packages=discover())
