#!/usr/bin/python3
"""Writes unicode_tables.inc: the Unicode facts the WordPiece tokenizer needs,
taken from Python's unicodedata so they match what Hugging Face's BERT
tokenizer computes in Python. Run with the system python3:

    /usr/bin/python3 runtime/data/unicode_tables_gen.py > runtime/data/unicode_tables.inc

Tables are sorted, non-overlapping codepoint ranges, looked up by binary
search. Every table covers all of Unicode (U+0000..U+10FFFF).
"""
import sys
import unicodedata

MAX_CP = 0x110000
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def ranges(predicate):
    """[first, last] runs of codepoints where predicate holds."""
    out, start = [], None
    for cp in range(MAX_CP):
        if predicate(cp):
            if start is None:
                start = cp
        elif start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, MAX_CP - 1))
    return out


def cat(cp):
    return unicodedata.category(chr(cp))


def is_control(cp):
    # HF _is_control: tab, newline and carriage return are whitespace instead.
    return chr(cp) not in "\t\n\r" and cat(cp).startswith("C")


def is_whitespace(cp):
    # HF _is_whitespace (Zs and " \t\n\r"), plus the line and paragraph
    # separators (Zl, Zp) that Python's str.split() also splits on.
    return chr(cp) in " \t\n\r" or cat(cp) in ("Zs", "Zl", "Zp")


def is_punctuation(cp):
    # HF _is_punctuation: all non-alphanumeric ASCII, plus Unicode P*.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return cat(cp).startswith("P")


# Python's str.lower() turns a capital sigma into the final form when, in
# its string, the nearest character before it that is not Case_Ignorable is
# Cased, and the nearest one after it that is not Case_Ignorable is not
# Cased (or there is none). Both properties are probed from str.lower()
# itself, so the tables agree with the Python that HF's tokenizer runs on.
def is_case_ignorable(cp):
    c = chr(cp)
    if c == "\u03a3":
        return False
    # '1' is neither cased nor ignorable; 'A' is cased and not ignorable.
    if ("1" + c + "\u03a3").lower().endswith("\u03c3") and ("A" + c + "\u03a3").lower().endswith("\u03c2"):
        return True
    return False


def is_cased(cp):
    # Only asked of characters that are not case-ignorable.
    c = chr(cp)
    return not is_case_ignorable(cp) and (c + "\u03a3").lower().endswith("\u03c2")


def lower_runs():
    """(first, last, delta, stride): cp in first..last step stride maps to cp+delta.
    Only single-codepoint lower-casings; the rest go to lower_multi()."""
    singles = []
    for cp in range(MAX_CP):
        low = chr(cp).lower()
        if len(low) == 1 and ord(low) != cp:
            singles.append((cp, ord(low) - cp))
    runs = []
    for cp, delta in singles:
        if runs:
            first, last, d, stride = runs[-1]
            if d == delta and (stride == 0 or cp - last == stride) and cp - last in (1, 2):
                runs[-1] = (first, cp, d, cp - last)
                continue
        runs.append((cp, cp, delta, 0))
    return [(f, l, d, s if s else 1) for f, l, d, s in runs]


def lower_multi():
    out = []
    for cp in range(MAX_CP):
        low = chr(cp).lower()
        if len(low) != 1:
            out.append((cp, [ord(c) for c in low]))
    return out


def stripped(cp):
    """NFD of cp without its Mn marks, as HF's _run_strip_accents leaves it."""
    return [ord(c) for c in unicodedata.normalize("NFD", chr(cp)) if cat(ord(c)) != "Mn"]


def strip_tables():
    """Codepoints whose accent-stripped NFD is not themselves (Hangul is
    decomposed algorithmically in C++). Single results become
    (first, last, target, delta_flag) runs; others a list."""
    single, multi = [], []
    for cp in range(MAX_CP):
        if HANGUL_FIRST <= cp <= HANGUL_LAST or cat(cp) == "Mn":
            continue  # Mn marks are dropped by the Mn table itself
        out = stripped(cp)
        if out == [cp]:
            continue
        if len(out) == 1:
            single.append((cp, out[0]))
        else:
            multi.append((cp, out))
    runs = []  # (first, last, target): every cp in the run maps to target
    for cp, target in single:
        if runs and runs[-1][1] == cp - 1 and runs[-1][2] == target:
            runs[-1] = (runs[-1][0], cp, target)
        else:
            runs.append((cp, cp, target))
    return runs, multi


def reorder_risk():
    """Non-Mn characters with a non-zero combining class: canonical reordering
    could move them, which the C++ side does not implement."""
    return [cp for cp in range(MAX_CP)
            if unicodedata.combining(chr(cp)) and cat(cp) != "Mn"]


def emit_ranges(name, rs):
    print(f"// {len(rs)} ranges")
    print(f"constexpr CodepointRange {name}[] = {{")
    line = ""
    for first, last in rs:
        item = f"{{0x{first:X}, 0x{last:X}}}, "
        if len(line) + len(item) > 96:
            print("    " + line.rstrip())
            line = ""
        line += item
    if line:
        print("    " + line.rstrip())
    print("};")
    print()


def emit_rows(name, type_name, rows):
    print(f"// {len(rows)} entries")
    print(f"constexpr {type_name} {name}[] = {{")
    line = ""
    for row in rows:
        item = "{" + ", ".join(row) + "}, "
        if len(line) + len(item) > 96:
            print("    " + line.rstrip())
            line = ""
        line += item
    if line:
        print("    " + line.rstrip())
    print("};")
    print()


def main():
    print("// Generated by runtime/data/unicode_tables_gen.py from Python's unicodedata")
    print(f"// (Unicode {unicodedata.unidata_version}). Do not edit; re-run the generator.")
    print("// Included by wordpiece.cc inside its anonymous namespace.")
    print()
    emit_ranges("kControlRanges", ranges(is_control))
    emit_ranges("kWhitespaceRanges", ranges(is_whitespace))
    emit_ranges("kPunctuationRanges", ranges(is_punctuation))
    emit_ranges("kNonspacingMarkRanges", ranges(lambda cp: cat(cp) == "Mn"))
    emit_ranges("kCaseIgnorableRanges", ranges(is_case_ignorable))
    emit_ranges("kCasedRanges", ranges(is_cased))
    emit_rows("kLowerRuns", "LowerRun",
              [(f"0x{f:X}", f"0x{l:X}", str(d), str(s)) for f, l, d, s in lower_runs()])
    multi = lower_multi()
    emit_rows("kLowerMulti", "MultiMapping",
              [(f"0x{cp:X}", str(len(out))) + tuple(f"0x{c:X}" for c in out) +
               ("0",) * (3 - len(out)) for cp, out in multi])
    runs, smulti = strip_tables()
    emit_rows("kStripRuns", "StripRun", [(f"0x{f:X}", f"0x{l:X}", f"0x{t:X}") for f, l, t in runs])
    assert all(len(out) <= 3 for _, out in smulti)
    emit_rows("kStripMulti", "MultiMapping",
              [(f"0x{cp:X}", str(len(out))) + tuple(f"0x{c:X}" for c in out) +
               ("0",) * (3 - len(out)) for cp, out in smulti])
    risk = reorder_risk()
    print(f"// Non-Mn characters with a combining class (not reordered here): {len(risk)}")


if __name__ == "__main__":
    main()
