"""Unit tests of docs/doxyfilter.py, the Doxygen input filter that reads
grace's plain C header comments as documentation (ctest docs.doxyfilter).
Standard library only."""

import glob
import os
import re
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "docs"))
import doxyfilter  # noqa: E402

convert = doxyfilter.convert


def code_only(src):
    """|src| without its comments: what the filter must leave alone."""
    out, pos = [], 0
    for start, end in doxyfilter.comments(src):
        out.append(src[pos:start])
        pos = end
    out.append(src[pos:])
    return "".join(out)


class Placement(unittest.TestCase):
    def test_opening_comment_is_the_file_block(self):
        self.assertEqual(convert("/*\n * grace: x.\n */\n#ifndef X\n"),
                         "/** \\file\n * grace: x.\n */\n#ifndef X\n")

    def test_comment_right_above_a_declaration(self):
        src = "#x\n/* Frees |w|. */\nvoid f(int w);\n"
        self.assertEqual(convert(src), "#x\n/** Frees `w`. */\nvoid f(int w);\n")

    def test_comment_above_a_define_and_a_struct_member(self):
        src = "#x\n/* One. */\n#define ONE 1\nstruct s {\n  /* A. */\n  int a;\n};\n"
        self.assertEqual(convert(src), "#x\n/** One. */\n#define ONE 1\n"
                         "struct s {\n  /** A. */\n  int a;\n};\n")

    def test_comments_not_attached_to_a_declaration_stay(self):
        for src in ("#x\n/* ---- section ---- */\n\nint f(void);\n",
                    "#x\n/* Before an include. */\n#include <a.h>\n",
                    "#x\n/* Before an if. */\n#ifdef A\n",
                    "#x\n/* First. */\n/* Second. */\nint a;\n",
                    "#x\nstruct s {\n  int a;\n  /* Last words. */\n};\n",
                    "#endif /* X_H */\n",
                    "int f(int a /* inline */, int b);\n"):
            # Only "Second" documents something (int a).
            self.assertEqual(convert(src).count("/**"),
                             1 if "Second" in src else 0, src)

    def test_trailing_member_comments(self):
        src = ("#x\nenum e {\n  A = 0, /* first */\n  B    /* last */\n};\n"
               "struct s {\n  int n; /* a count */\n};\n")
        self.assertEqual(convert(src), src.replace("/* ", "/**< "))

    def test_doxygen_comments_are_left_as_they_are(self):
        src = "#x\n/** Already. */\nint a;\nint b; /**< too */\n"
        self.assertEqual(convert(src), src)

    def test_comment_markers_in_strings_are_code(self):
        src = '#x\n#define S "/* not a comment */"\nchar c = \'"\';\n/* Doc. */\nint a;\n'
        self.assertEqual(convert(src), src.replace("/* Doc", "/** Doc"))


class Text(unittest.TestCase):
    def body(self, text):
        out = convert("#x\n/*" + text + "*/\nint a;\n")
        return out[len("#x\n/**"):-len("*/\nint a;\n")]

    def test_markup_characters_are_escaped(self):
        self.assertEqual(self.body(" <uv.h> & %XX #1 @p a\\b $x "),
                         " \\<uv.h\\> \\& \\%XX \\#1 \\@p a\\\\b \\$x ")

    def test_parameters_become_code_spans_and_stay_literal(self):
        self.assertEqual(self.body(" |*out| or |opts->size| <n> "),
                         " `*out` or `opts->size` \\<n\\> ")
        self.assertEqual(self.body(" a | b | c, `x<y>` "), " a | b | c, `x<y>` ")

    def test_an_indented_sketch_is_a_code_block(self):
        text = ("\n * Use:\n *\n *   int a = f(&b);  // <- here\n *   g(a);\n"
                " *\n * Then |a|.\n ")
        self.assertEqual(self.body(text),
                         "\n * Use:\n * \\code{.c}\n *   int a = f(&b);  // <- here\n"
                         " *   g(a);\n * \\endcode\n * Then `a`.\n ")

    def test_a_sketch_at_the_end_of_the_comment(self):
        self.assertEqual(self.body("\n * Use:\n *\n *   f(&b);\n "),
                         "\n * Use:\n * \\code{.c}\n *   f(&b);\n \\endcode ")

    def test_lists_and_continuations_are_not_code(self):
        text = ("\n * Steps:\n *\n *  1. first <a>\n *     more\n *  2. second\n"
                " *\n *   not code: no blank line after it\n * end\n ")
        out = self.body(text)
        self.assertNotIn("\\code", out)
        self.assertIn("first \\<a\\>", out)


class Headers(unittest.TestCase):
    """Every public header, whoever adds it: the code and the line count
    are untouched, and each header's opening comment is its \\file."""

    def headers(self):
        found = sorted(glob.glob(os.path.join(ROOT, "include", "grace", "*.h")))
        self.assertTrue(found)
        return found

    def test_code_and_lines_unchanged(self):
        documented = 0
        for path in self.headers():
            with open(path, encoding="utf-8") as f:
                src = f.read()
            out = convert(src)
            self.assertEqual(out.count("\n"), src.count("\n"), path)
            self.assertEqual(code_only(out), code_only(src), path)
            self.assertTrue(out.startswith("/** \\file"), path)
            documented += out.count("/**") - 1
        self.assertGreater(documented, 100)

    def test_runs_as_doxygen_runs_it(self):
        with tempfile.NamedTemporaryFile("w", suffix=".h") as f:
            f.write("/* x */\nint a; /* b */\n")
            f.flush()
            out = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "doxyfilter.py"),
                                  f.name], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout, "/** \\file x */\nint a; /**< b */\n")


if __name__ == "__main__":
    unittest.main(verbosity=2)
