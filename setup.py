"""What pyproject.toml's tables cannot say: the wheel also carries the ParaView plugin.

``plugin/STSRINRPlugin.py`` is installed as the only file of ``stsr_paraview`` (a folder
without ``__init__.py``), so that the folder ``stsr plugin-path`` prints holds nothing but
the plugin: ParaView loads every ``.py`` file of a ``PV_PLUGIN_PATH`` folder. It is data
beside ``stsr_core``, which never imports ParaView; the plugin finds ``stsr_core`` in the
folder above its own.
"""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["stsr_core", "stsr_core.*"]) + ["stsr_paraview"],
      package_dir={"stsr_paraview": "plugin"})
