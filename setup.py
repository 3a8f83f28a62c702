"""httppush: an eKuiper portable source plugin that receives records pushed over HTTP(S).

The installable artefacts are the plugin zips built by ``make package`` (``dist/pyhttppush.zip``,
``dist/httppush.zip``); this file makes the package importable in a development environment (``pip install -e .``).
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="httppush-plugin",
    version="0.1.0",
    description="eKuiper portable source plugin: records pushed over HTTP(S) POST/PUT",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["httppush_plugin", "httppush_plugin.*"]),
    python_requires=">=3.10",
    install_requires=requirements(),
    license="Apache-2.0",
)
