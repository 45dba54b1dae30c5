"""Write ``cupy_api.json`` beside this file from a real CuPy (no GPU needed: CuPy imports without
one): the names the stand-in in ``cupy/`` may answer to, so that npl calling a function, method
or keyword CuPy does not have fails on the stand-in as it would on a GPU.

    python tests/fake_cupy/make_api.py        # with the real cupy importable (pip install cupy-cudaXX)
"""
import inspect
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _params(obj):
    """Parameter names (None: not introspectable; "*" / "**" mark *args / **kwargs)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    out = []
    for p in sig.parameters.values():
        out.append({p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, p.name))
    return out


def main():
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]   # not the stand-in
    import cupy
    import cupyx
    if getattr(cupy, "fake", False):
        raise SystemExit("this is the stand-in, not CuPy")
    api = {"cupy_version": cupy.__version__, "functions": {}, "ufuncs": [], "other": [],
           "ndarray": sorted(n for n in dir(cupy.ndarray) if not n.startswith("__")),
           "cupyx": sorted(n for n in dir(cupyx) if not n.startswith("_"))}
    for name in sorted(dir(cupy)):
        if name.startswith("_"):
            continue
        obj = getattr(cupy, name)
        if isinstance(obj, cupy.ufunc):
            api["ufuncs"].append(name)
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            api["functions"][name] = _params(obj)
        else:
            api["other"].append(name)
    path = os.path.join(HERE, "cupy_api.json")
    with open(path, "w") as f:
        json.dump(api, f, indent=0, sort_keys=True)
        f.write("\n")
    print("wrote %s: CuPy %s, %d functions, %d ufuncs, %d ndarray attributes"
          % (path, api["cupy_version"], len(api["functions"]), len(api["ufuncs"]), len(api["ndarray"])))


if __name__ == "__main__":
    main()
