"""API tables that follow the code: ``.. public-names:: MODULE`` on an API page is an autosummary
table (with a page per name) of MODULE's public functions and classes, so a name added to a
module appears in the reference by itself and a name removed leaves no stale entry.

A module's public names are its ``__all__`` where it has one, else the functions and classes
defined in it whose names do not start with an underscore; constants and submodules in
``__all__`` are left to the prose. A name exported by several modules (``simcore.MLP`` is
``simcore.mlp.MLP``) is documented once, under the first module of ``api_modules`` (conf.py)
that exports it; ``api_also`` (conf.py) adds names a module's ``__all__`` leaves out. autosummary
makes the pages from ``generated/api_names.rst``, which this writes at ``config-inited`` (it is
no page itself: conf.py excludes it and lists it in ``autosummary_generate``).
"""
import importlib
import posixpath
from pathlib import Path

from docutils.statemachine import StringList
from sphinx.ext.autosummary import Autosummary

NAMES_FILE = "generated/api_names.rst"
NAMES = {}                                 # {module: [names documented under it]}, set at config-inited


def public_names(modname):
    """MODULE's public functions and classes (anything callable): from ``__all__`` where it has
    one, else those defined in it without a leading underscore."""
    mod = importlib.import_module(modname)
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n, o in vars(mod).items()
                 if not n.startswith("_") and getattr(o, "__module__", None) == modname]
    return [n for n in names if callable(getattr(mod, n))]    # numba's intrinsics too, not constants


def documented_names(modules, also=None):
    """{module: [names documented under it]}: each object once, under the first module that
    exports it; ``also``: {module: [names to add]}."""
    seen, out = set(), {}
    for modname in modules:
        mod = importlib.import_module(modname)
        out[modname] = []
        for n in public_names(modname) + list((also or {}).get(modname, ())):
            if id(getattr(mod, n)) not in seen:
                seen.add(id(getattr(mod, n)))
                out[modname].append(n)
    return out


def write_names_file(app, config):
    """``generated/api_names.rst``: every documented name in an autosummary with a toctree, the
    input autosummary makes the pages from."""
    NAMES.clear()
    NAMES.update(documented_names(config.api_modules, config.api_also))
    lines = [":orphan:", ""]
    for modname, members in NAMES.items():
        lines += [".. autosummary::", "   :toctree: .", ""] + [f"   {modname}.{n}" for n in members] + [""]
    path = Path(app.srcdir) / NAMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


class PublicNames(Autosummary):
    """``.. public-names:: MODULE``: the autosummary table of MODULE's documented names."""

    required_arguments = 1
    has_content = False
    option_spec = {}

    def run(self):
        modname = self.arguments[0]
        if modname not in NAMES:
            raise self.error(f"public-names: {modname} is not in api_modules (docs/conf.py)")
        self.content = StringList(NAMES[modname], source=self.get_source_info()[0])
        here = posixpath.dirname(self.env.docname)
        self.options = {"toctree": posixpath.relpath("generated", here) + "/", "nosignatures": True}
        ctx = self.env.ref_context
        before = ctx.get("py:module")
        ctx["py:module"] = modname
        try:
            return super().run()
        finally:
            if before is None:
                ctx.pop("py:module", None)
            else:
                ctx["py:module"] = before


def setup(app):
    app.add_config_value("api_modules", [], "env")
    app.add_config_value("api_also", {}, "env")
    app.connect("config-inited", write_names_file)
    app.add_directive("public-names", PublicNames)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
