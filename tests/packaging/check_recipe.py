#!/usr/bin/env python3
"""The Spack recipe (spack/spack_repo/loom) as far as no Spack is needed to check it:
it compiles, its repo.yaml is Spack 1.x's package API v2 for namespace loom, and every
CMake variable its cmake_args sets is an option or cache variable of Loom's build, so
that renaming one in CMake cannot leave the recipe setting a name nobody reads.

usage: check_recipe.py SOURCE_DIR PYCACHE_DIR"""

import ast
import pathlib
import py_compile
import re
import sys


def fail(message):
    print(f"check_recipe.py: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    source, pycache = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    repo = source / "spack" / "spack_repo" / "loom"
    recipe = repo / "packages" / "loom" / "package.py"

    repo_yaml = (repo / "repo.yaml").read_text()
    for line in ("namespace: loom", "api: v2.0"):
        if line not in repo_yaml:
            fail(f"{repo / 'repo.yaml'} lacks '{line}'")

    try:
        py_compile.compile(str(recipe), cfile=str(pycache / "package.pyc"), doraise=True)
    except py_compile.PyCompileError as e:
        fail(str(e))

    # The first argument of every self.define(...) and self.define_from_variant(...).
    defined = set()
    for node in ast.walk(ast.parse(recipe.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("define", "define_from_variant")
                and node.args and isinstance(node.args[0], ast.Constant)):
            defined.add(node.args[0].value)
    if not defined:
        fail(f"{recipe} sets no CMake variable in cmake_args")

    declared = set()
    for cmakelists in source.rglob("CMakeLists.txt"):
        if "build" in cmakelists.relative_to(source).parts[:1]:
            continue
        text = cmakelists.read_text()
        declared.update(re.findall(r"^\s*option\((\w+)", text, re.M))
        declared.update(re.findall(r"^\s*set\((\w+)\s[^)]*\bCACHE\b", text, re.M))
    # CMake's own hints to its modules (FindPython3) are not Loom's to declare.
    unknown = sorted(defined - declared - {"Python3_EXECUTABLE"})
    if unknown:
        fail(f"{recipe} sets {', '.join(unknown)}, which no CMakeLists.txt declares")
    print(f"check_recipe.py: {recipe.relative_to(source)} compiles; sets {', '.join(sorted(defined))}")


if __name__ == "__main__":
    main()
