"""Shared helpers: rosbags typestore loading and registration of bundled interfaces.

Used by ros2peer.py and oracle.py. Type names are ROS form ``pkg/msg/Name`` and, for
services, ``pkg/srv/Name_Request`` / ``pkg/srv/Name_Response``.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype

EMPTY_FIELD = 'structure_needs_at_least_one_member'
EMPTY_DESC = (Nodetype.BASE, ('uint8', 0))

_SRV_SEP = re.compile(r'^\s*---\s*$', re.MULTILINE)


def store_choice():
    """Stores.ROS2_JAZZY if present, else the newest ROS 2 store."""
    if hasattr(Stores, 'ROS2_JAZZY'):
        return Stores.ROS2_JAZZY
    ros2 = [s for s in Stores if s.name.startswith('ROS2_')]
    return ros2[-1]


def load_typestore():
    store = store_choice()
    return get_typestore(store), store.name


def _fix_empty(types: dict) -> dict:
    """ROS 2 (rosidl) gives memberless structs one uint8 member; mirror that."""
    out = {}
    for name, (consts, fields) in types.items():
        if not fields:
            fields = [(EMPTY_FIELD, EMPTY_DESC)]
        out[name] = (consts, fields)
    return out


def parse_interface_file(path: Path) -> dict:
    """Parse one .msg or .srv file (path .../<pkg>/{msg,srv}/<Name>.{msg,srv}) into rosbags types."""
    pkg = path.parent.parent.name
    kind = path.parent.name
    name = path.stem
    text = path.read_text(encoding='utf-8')
    if path.suffix == '.msg':
        return _fix_empty(get_types_from_msg(text, f'{pkg}/msg/{name}'))
    if path.suffix == '.srv':
        parts = _SRV_SEP.split(text, maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f'{path}: no --- separator')
        types = {}
        # rosbags normalizes 'pkg/srv/X' to 'pkg/srv/msg/X' and would resolve relative field
        # types against that; parse as pkg/msg/... (relative refs -> pkg/msg/Foo) and rename.
        for part, suffix in ((parts[0], 'Request'), (parts[1], 'Response')):
            tmp = f'{pkg}/msg/{name}_{suffix}'
            parsed = get_types_from_msg(part, tmp)
            types[f'{pkg}/srv/{name}_{suffix}'] = parsed.pop(tmp)
            types.update(parsed)
        return _fix_empty(types)
    raise ValueError(f'{path}: unsupported interface kind {kind}')


def interface_files(root: Path):
    """All <pkg>/msg/*.msg and <pkg>/srv/*.srv below root, sorted."""
    root = Path(root)
    files = sorted(root.glob('*/msg/*.msg')) + sorted(root.glob('*/srv/*.srv'))
    return sorted(files)


def _norm_fields(fields):
    return [(n, repr(d)) for n, d in fields]


def register_dir(ts, root, log=None):
    """Register every interface under root that the store lacks.

    Returns (bundled, source, mismatches): bundled is the list of type names declared by
    the directory's files (in file order), source maps type name -> 'store' or 'project',
    mismatches lists type names whose project text differs from the store definition.
    """
    bundled = []
    source = {}
    mismatches = []
    toadd = {}
    for path in interface_files(root):
        try:
            types = parse_interface_file(path)
        except Exception as exc:  # noqa: BLE001
            if log:
                log(f'WARN cannot parse {path}: {exc}')
            continue
        # Order: for srv Request then Response; rosbags dict keeps insertion order.
        main_names = [n for n in types if n.startswith(f'{path.parent.parent.name}/{path.parent.name}/{path.stem}')]
        for name in main_names:
            bundled.append(name)
        for name, definition in types.items():
            if name in ts.fielddefs:
                source.setdefault(name, 'store')
                if _norm_fields(ts.fielddefs[name][1]) != _norm_fields(definition[1]):
                    mismatches.append(name)
            else:
                source[name] = 'project'
                toadd[name] = definition
    if toadd:
        ts.register(toadd)
    return bundled, source, mismatches


def is_uint8_like(desc) -> bool:
    return desc[0] == Nodetype.BASE and desc[1][0] in ('uint8', 'byte', 'char')


# ---- float <-> JSON convention ----

def float_to_json(x: float):
    if math.isnan(x):
        return 'NaN'
    if math.isinf(x):
        return 'inf' if x > 0 else '-inf'
    return x


def float_from_json(v) -> float:
    if isinstance(v, str):
        s = v.strip().lower()
        if s == 'nan':
            return math.nan
        if s in ('inf', '+inf', 'infinity'):
            return math.inf
        if s in ('-inf', '-infinity'):
            return -math.inf
        return float(v)
    return float(v)


def eprint(*args):
    print(*args, file=sys.stderr, flush=True)
