#!/usr/bin/env python3
"""Check the bundled ROS 2 interface definitions against rosbags.

Usage:
    python check_definitions.py /path/to/ros2/interfaces

Every ``<pkg>/msg/<Name>.msg`` and ``<pkg>/srv/<Name>.srv`` file below the
given directory is parsed with rosbags' own ``.msg`` parser
(``rosbags.typesys.get_types_from_msg``) and compared with the same type in
rosbags' built-in type store for ROS 2 Jazzy (or the newest ROS 2 store this
rosbags knows, if it has no Jazzy store):

* field names and order,
* field types (primitive names with string bounds, nested type names),
* array kind (scalar / fixed ``[N]`` / bounded ``[<=N]`` / unbounded ``[]``),
* constants (name, type, value),
* the RIHS01 type hash, computed over the bundled definitions alone and
  compared with the store's hash (this covers the whole nested closure).

Types the store does not know (services, in all stores so far) are only
parsed; each nested type they reference must then resolve to a bundled
definition or to a store type.  Nested types of every definition must resolve
within the bundle itself, since the bundle is meant to be self-contained.

Prints one line per interface type and a closing summary
``definitions: N passed, M failed``.  Exits with 1 if anything failed.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

DUMMY_MEMBER = 'structure_needs_at_least_one_member'
SEPARATOR = re.compile(r'^\s*---\s*$', re.MULTILINE)


def pick_store() -> Stores:
    """Return the ROS 2 Jazzy store, or else the newest ROS 2 store."""
    if hasattr(Stores, 'ROS2_JAZZY'):
        return Stores.ROS2_JAZZY
    ros2 = [s for s in Stores if s.name.startswith('ROS2_')]
    if not ros2:
        sys.exit('rosbags has no ROS 2 type store')
    return ros2[-1]  # enum members are declared oldest to newest


def describe(desc: tuple) -> str:
    """Render a rosbags field descriptor in .msg notation.

    ``(BASE, ('string', 5))`` -> ``string<=5``; ``(NAME, 'a/msg/B')`` ->
    ``a/msg/B``; ``(ARRAY, (inner, 9))`` -> ``inner[9]``;
    ``(SEQUENCE, (inner, 0))`` -> ``inner[]``; ``(SEQUENCE, (inner, 3))`` ->
    ``inner[<=3]``.
    """
    kind, rest = desc
    if kind == Nodetype.BASE:
        typ, bound = rest
        return f'{typ}<={bound}' if bound else str(typ)
    if kind == Nodetype.NAME:
        return str(rest)
    inner, size = rest
    if kind == Nodetype.ARRAY:
        return f'{describe(inner)}[{size}]'
    if kind == Nodetype.SEQUENCE:
        return f'{describe(inner)}[<={size}]' if size else f'{describe(inner)}[]'
    return f'<unknown node {kind!r}: {rest!r}>'


def nested_names(desc: tuple) -> list[str]:
    """Names of nested message types referenced by a field descriptor."""
    kind, rest = desc
    if kind == Nodetype.NAME:
        return [rest]
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        return nested_names(rest[0])
    return []


def strip_dummy(fields: list) -> list:
    """Drop the code generator's placeholder member of empty messages.

    The store lists ``uint8 structure_needs_at_least_one_member`` for empty
    messages, while parsing an empty .msg gives no fields; both mean "empty".
    """
    if len(fields) == 1 and fields[0][0] == DUMMY_MEMBER:
        return []
    return list(fields)


def same_value(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            fa, fb = float(a), float(b)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return fa == fb or (math.isnan(fa) and math.isnan(fb))
    return type(a) is type(b) and a == b


def compare(ours: tuple, theirs: tuple) -> list[str]:
    """Compare two (constants, fields) entries; return the differences."""
    problems: list[str] = []
    our_consts, our_fields = ours
    their_consts, their_fields = theirs

    of = strip_dummy(our_fields)
    tf = strip_dummy(their_fields)
    our_names = [n for n, _ in of]
    their_names = [n for n, _ in tf]
    if our_names != their_names:
        missing = [n for n in their_names if n not in our_names]
        extra = [n for n in our_names if n not in their_names]
        if missing:
            problems.append(f'missing fields {missing}')
        if extra:
            problems.append(f'extra fields {extra}')
        if not missing and not extra:
            problems.append(f'field order {our_names} != {their_names}')
    their_by_name = dict(tf)
    for name, desc in of:
        if name in their_by_name:
            a, b = describe(desc), describe(their_by_name[name])
            if a != b:
                problems.append(f'field {name}: {a} != {b}')

    ours_c = {n: (t, v) for n, t, v in our_consts}
    theirs_c = {n: (t, v) for n, t, v in their_consts}
    missing_c = [n for n in theirs_c if n not in ours_c]
    extra_c = [n for n in ours_c if n not in theirs_c]
    if missing_c:
        problems.append(f'missing constants {missing_c}')
    if extra_c:
        problems.append(f'extra constants {extra_c}')
    for name, (typ, val) in ours_c.items():
        if name not in theirs_c:
            continue
        ttyp, tval = theirs_c[name]
        if typ != ttyp:
            problems.append(f'constant {name}: type {typ} != {ttyp}')
        if not same_value(val, tval):
            problems.append(f'constant {name}: value {val!r} != {tval!r}')
    return problems


def find_files(root: Path) -> list[tuple[str, str, Path]]:
    """Return (pkg, kind, path) for every interface file, sorted."""
    found = []
    for path in sorted(root.glob('*/*/*')):
        kind = path.parent.name
        if kind in ('msg', 'srv') and path.suffix == f'.{kind}' and path.is_file():
            found.append((path.parent.parent.name, kind, path))
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f'usage: {argv[0]} INTERFACES_DIR', file=sys.stderr)
        return 2
    root = Path(argv[1])
    if not root.is_dir():
        print(f'not a directory: {root}', file=sys.stderr)
        return 2

    store_id = pick_store()
    store = get_typestore(store_id)
    print(f'rosbags store: {store_id.value}')

    files = find_files(root)
    parsed: dict[str, tuple] = {}  # typename -> (consts, fields), all bundled types
    errors: dict[str, str] = {}  # interface name -> parse error
    parts: dict[str, list[str]] = {}  # interface name -> its typenames
    for pkg, kind, path in files:
        iface = f'{pkg}/{kind}/{path.stem}'
        text = path.read_text(encoding='utf-8')
        if kind == 'msg':
            sections = [(iface, text)]
        else:
            chunks = SEPARATOR.split(text)
            if len(chunks) != 2:
                errors[iface] = f'expected exactly one --- separator, found {len(chunks) - 1}'
                continue
            sections = [(f'{iface}_Request', chunks[0]), (f'{iface}_Response', chunks[1])]
        parts[iface] = []
        for typename, body in sections:
            # rosbags' .msg parser only knows msg/ and action/ namespaces: it
            # would rename pkg/srv/X to pkg/srv/msg/X and resolve same-package
            # nested names (``OccupancyGrid``) to pkg/srv/msg/OccupancyGrid.
            # Parse service halves under the pkg/msg/ namespace, then rename.
            parse_as = typename.replace('/srv/', '/msg/', 1)
            try:
                result = get_types_from_msg(body, parse_as)
            except Exception as exc:  # noqa: BLE001 - report any parser failure
                errors[iface] = f'parse error in {typename}: {exc}'.replace('\n', ' ')
                break
            if list(result) != [parse_as]:
                errors[iface] = f'parser returned {sorted(result)} instead of {parse_as}'
                break
            parsed[typename] = result[parse_as]
            parts[iface].append(typename)

    # RIHS01 hashes over the bundled definitions alone.
    # Stores.EMPTY still carries builtin_interfaces, so start from a bare store.
    own_store = get_typestore(Stores.EMPTY)
    own_store.fielddefs.clear()
    own_store.types.clear()
    try:
        own_store.register(dict(parsed))
        can_hash = hasattr(own_store, 'hash_rihs01') and hasattr(store, 'hash_rihs01')
    except Exception as exc:  # noqa: BLE001
        print(f'note: could not register bundled types for hashing: {exc}')
        can_hash = False

    # First pass: per-type problems found by direct comparison.
    direct: dict[str, list[str]] = {}
    for typename, (_, fields) in parsed.items():
        found = []
        for fname, desc in fields:
            for ref in nested_names(desc):
                if ref not in parsed:
                    where = 'only in rosbags store' if ref in store.fielddefs else 'unknown'
                    found.append(f'field {fname}: nested type {ref} not bundled ({where})')
        if typename in store.fielddefs:
            found += compare(parsed[typename], store.fielddefs[typename])
        direct[typename] = found

    def closure(typename: str) -> list[str]:
        """Bundled types nested (transitively) in typename."""
        seen: list[str] = []
        todo = [typename]
        while todo:
            for _, desc in parsed[todo.pop()][1]:
                for ref in nested_names(desc):
                    if ref in parsed and ref not in seen and ref != typename:
                        seen.append(ref)
                        todo.append(ref)
        return seen

    passed = failed = parsed_only = 0
    for pkg, kind, path in files:
        iface = f'{pkg}/{kind}/{path.stem}'
        if iface in errors:
            print(f'{iface}: ERROR: {errors[iface]}')
            failed += 1
            continue

        problems: list[str] = []
        compared = 0
        unknown = []
        for typename in parts[iface]:
            label = typename.rsplit('_', 1)[1] + ' ' if kind == 'srv' else ''
            own = [label + p for p in direct[typename]]
            problems += own
            if typename not in store.fielddefs:
                unknown.append(typename)
                continue
            compared += 1
            if own or not can_hash:
                continue
            bad_nested = [t for t in closure(typename) if direct[t]]
            if bad_nested:
                problems.append(f'{label}nested type(s) differ: {", ".join(bad_nested)}')
                continue
            # Field-by-field the type and its nested types agree; the type
            # hash must agree too (this guards the comparison itself).
            try:
                ours_h = own_store.hash_rihs01(typename)
                theirs_h = store.hash_rihs01(typename)
            except Exception as exc:  # noqa: BLE001
                problems.append(f'{label}could not compute RIHS01 hash: {exc}')
            else:
                if ours_h != theirs_h:
                    problems.append(f'{label}RIHS01 type hash {ours_h} != {theirs_h}')

        if problems:
            print(f'{iface}: MISMATCH: ' + '; '.join(problems))
            failed += 1
        elif compared and not unknown:
            print(f'{iface}: OK')
            passed += 1
        elif compared:
            print(f'{iface}: OK (partly parsed only: {", ".join(unknown)} not in rosbags store)')
            passed += 1
        else:
            print(f'{iface}: parsed only (not in rosbags store)')
            passed += 1
            parsed_only += 1

    if not files:
        print(f'no .msg or .srv files found under {root}')
        failed += 1
    print(f'compared against {store_id.value}: {passed - parsed_only} matched, {parsed_only} parsed only')
    print(f'definitions: {passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
