"""transformers is an oracle for the tests, never a runtime dependency."""

import subprocess
import sys


def test_package_never_imports_transformers():
    code = (
        "import importlib, pkgutil, sys, perceiver_serve\n"
        "for m in pkgutil.walk_packages(perceiver_serve.__path__, 'perceiver_serve.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] == 'transformers')\n"
        "assert not bad, bad\n"
        "print('modules', len([n for n in sys.modules if n.startswith('perceiver_serve')]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) > 5
