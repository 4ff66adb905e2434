#!/usr/bin/env python3
"""Doxygen input filter: grace's plain C comments as Doxygen comments.

The public headers (include/grace/*.h) document each declaration with an
ordinary /* ... */ comment right above it, and each file with an opening
comment.  Doxygen reads only /** ... */ comments, so this filter (Doxyfile's
FILTER_PATTERNS, run as `python3 doxyfilter.py FILE`) prints FILE with:

  - the file's opening comment (nothing but blank space before it) made a
    \\file block: /** \\file ... */;
  - a comment that stands on its own lines and is followed at once (the
    next line) by code, a declaration or a #define, made /** ... */;
  - a comment that ends the line of a declaration or a member
    ("int x; /* ... */", "A = 0, /* ... */", "LAST /* ... */") made
    /**< ... */, documenting it;
  - every other comment (section rulers, a comment followed by a blank line
    or by #include/#if/#endif, a comment after #endif) left as it is, which
    Doxygen ignores.

The text of a converted comment is plain prose, not Doxygen markup: the
characters Doxygen or Markdown would read as commands or HTML (\\ @ < > & #
% $) are escaped, |name| (how the headers name a parameter) becomes `name`,
and a block indented two or more columns past the comment's text, between
blank lines (the usage sketches), becomes a \\code block.  Code outside
comments is not changed, and neither is the number of lines, so Doxygen's
line numbers (and warnings) point at the real header.
"""

import re
import sys

# Characters escaped in comment prose (Doxygen's \\, \\@, \\< ... escapes).
_ESCAPE = re.compile(r'([\\@<>&#%$])')
# |name| or |*out| or |opts.loops|: a parameter, shown as code.
_PARAM = re.compile(r'\|([^|\s]+)\|')
# The leading decoration of a comment's continuation line: " * ".
_STAR = re.compile(r'^(\s*\*)?')
# A numbered or bulleted list item (not a code block).
_LIST_ITEM = re.compile(r'^\s*(\d+\.|[-*+])\s')
# What a comment must be followed by to document it: a line of code that
# is not a comment or a closing brace, or a #define (other directives,
# #include, #if, #endif, are not documented).
_DOCUMENTED = re.compile(r'^\s*(#\s*define\b|[^\s#/}])')


def comments(src):
    """Yields (start, end) of every /* */ comment, skipping strings,
    character literals and // comments."""
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in '"\'':
            j = i + 1
            while j < n and src[j] != c and src[j] != '\n':
                j += 2 if src[j] == '\\' else 1
            i = j + 1
        elif src.startswith('//', i):
            j = src.find('\n', i)
            i = n if j < 0 else j
        elif src.startswith('/*', i):
            j = src.find('*/', i + 2)
            if j < 0:
                return
            yield i, j + 2
            i = j + 2
        else:
            i += 1


def prose(text):
    """Escapes one line of comment prose, turning |name| into `name`."""
    out = []
    for k, part in enumerate(re.split(r'(`[^`\n]*`)', text)):
        if k % 2:  # a `code span` of the comment itself: literal already
            out.append(part)
            continue
        pos = 0
        for m in _PARAM.finditer(part):
            out.append(_ESCAPE.sub(r'\\\1', part[pos:m.start()]))
            out.append('`' + m.group(1) + '`')
            pos = m.end()
        out.append(_ESCAPE.sub(r'\\\1', part[pos:]))
    return ''.join(out)


def body(text):
    """Converts the text between /* and */, line for line."""
    lines = text.split('\n')
    # Each line as (decoration, content); the first has no decoration.
    split = []
    for k, line in enumerate(lines):
        m = _STAR.match(line) if k else None
        deco = m.group(0) if m else ''
        split.append((deco, line[len(deco):]))

    def indent(s):
        return len(s) - len(s.lstrip(' '))

    def blank(k):
        return not split[k][1].strip()

    texts = [c for k, (_, c) in enumerate(split) if c.strip()]
    base = min((indent(c) for c in texts), default=0)
    code = [False] * len(lines)
    k = 1
    while k < len(lines):
        # A code block: after a blank line, lines indented >= base + 2 up
        # to a blank line or the comment's end, not a list item.
        if blank(k - 1) and not blank(k) and indent(split[k][1]) >= base + 2 \
                and not _LIST_ITEM.match(split[k][1]):
            j = k
            while j < len(lines) and not blank(j) and \
                    indent(split[j][1]) >= base + 2:
                j += 1
            if j == len(lines) or blank(j):
                for m in range(k, j):
                    code[m] = True
                k = j
                continue
        k += 1

    out = []
    for k, (deco, content) in enumerate(split):
        if code[k]:
            line = deco + content
        else:
            line = deco + prose(content)
        if code[k] and (k == 0 or not code[k - 1]):
            out[-1] += ' \\code{.c}'
        if not code[k] and k and code[k - 1]:
            line = deco + ' \\endcode' + line[len(deco):]
        out.append(line)
    if code[-1]:  # the comment ends on a line of its code block
        out[-1] += ' \\endcode'
    return '\n'.join(out)


def convert(src):
    """Returns |src| with its documentation comments made Doxygen's."""
    out, pos = [], 0
    for start, end in comments(src):
        text = src[start:end]
        if text.startswith(('/**', '/*!')) and text != '/**/':
            continue  # a Doxygen comment already
        line_start = src.rfind('\n', 0, start) + 1
        before = src[line_start:start]
        line_end = src.find('\n', end)
        after = src[end:] if line_end < 0 else src[end:line_end]
        next_end = src.find('\n', line_end + 1) if line_end >= 0 else -1
        next_line = '' if line_end < 0 else \
            src[line_end + 1:] if next_end < 0 else src[line_end + 1:next_end]
        if not src[:start].strip():
            opening = '/** \\file'
        elif not before.strip() and not after.strip() and \
                _DOCUMENTED.match(next_line):
            opening = '/**'
        elif before.strip() and not after.strip() and \
                not before.lstrip().startswith('#') and \
                not before.rstrip().endswith(('{', '(')):
            opening = '/**<'
        else:
            continue
        out.append(src[pos:start])
        out.append(opening + body(text[2:-2]) + '*/')
        pos = end
    out.append(src[pos:])
    return ''.join(out)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write('usage: doxyfilter.py FILE\n')
        return 2
    with open(argv[1], encoding='utf-8') as f:
        sys.stdout.write(convert(f.read()))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
