#!/usr/bin/env python3
"""CDR oracle cases generated with rosbags.

  oracle.py gen --interfaces /work/main/ros2/interfaces --seed 42 --per-type 5 --out cases.json
      [--type pkg/msg/Name ...] [--cross-check-cyclone]

For every bundled interface (<pkg>/msg/*.msg -> pkg/msg/Name; <pkg>/srv/*.srv ->
pkg/srv/Name_Request and pkg/srv/Name_Response) the rosbags store definition is used when the
store has the type, else the project's text is registered. Random values (deterministic per
seed and type name) are serialized with rosbags' CDR serializer in both byte orders.

Output: {"generator": "rosbags <version>", "store": ..., "seed": ..., "cases": [
  {"type": ..., "value": <JSON per convention>, "le": "<hex incl. 4-byte header>", "be": "<hex>"}]}
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
from importlib.metadata import version as pkg_version

import numpy as np
from rosbags.typesys.base import Nodetype

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ros2types import EMPTY_FIELD, eprint, float_to_json, load_typestore, register_dir  # noqa: E402

INT_RANGES = {
    'int8': (-(2**7), 2**7 - 1),
    'uint8': (0, 2**8 - 1),
    'byte': (0, 2**8 - 1),
    'char': (0, 2**8 - 1),
    'int16': (-(2**15), 2**15 - 1),
    'uint16': (0, 2**16 - 1),
    'int32': (-(2**31), 2**31 - 1),
    'uint32': (0, 2**32 - 1),
    'int64': (-(2**63), 2**63 - 1),
    'uint64': (0, 2**64 - 1),
}
NP_DTYPE = {
    'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'uint8': np.uint8, 'int8': np.int8,
    'int16': np.int16, 'uint16': np.uint16, 'int32': np.int32, 'uint32': np.uint32,
    'int64': np.int64, 'uint64': np.uint64, 'float32': np.float32, 'float64': np.float64,
}
FLOATS = ('float32', 'float64')
ASCII = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-./:{}"\\\t\n'
MULTI = 'éßü€中文😀Ω'


class Gen:
    """Random rosbags values + their JSON form."""

    def __init__(self, ts, rng: random.Random):
        self.ts = ts
        self.rng = rng

    def msg(self, typename):
        _consts, fields = self.ts.fielddefs[typename]
        kwargs, js = {}, {}
        for fname, desc in fields:
            if fname == EMPTY_FIELD:
                kwargs[fname], js[fname] = 0, 0  # rosidl's placeholder member is always 0
                continue
            kwargs[fname], js[fname] = self.field(desc)
        return self.ts.types[typename](**kwargs), js

    # scalars -------------------------------------------------------------
    def int_(self, typ):
        lo, hi = INT_RANGES[typ]
        r = self.rng.random()
        if r < 0.15:
            return lo
        if r < 0.30:
            return hi
        if r < 0.40:
            return 0
        if r < 0.60:
            return self.rng.randint(max(lo, -100), min(hi, 100))
        return self.rng.randint(lo, hi)

    def float_(self, typ):
        rng = self.rng
        r = rng.random()
        if r < 0.03:
            x = float('nan')
        elif r < 0.05:
            x = float('inf') if rng.random() < 0.5 else float('-inf')
        elif r < 0.12:
            x = 0.0
        elif r < 0.35:
            x = float(rng.randint(-1000, 1000))
        elif r < 0.65:
            x = rng.uniform(-1.0, 1.0)
        elif r < 0.85:
            x = rng.uniform(-1e6, 1e6)
        else:
            x = rng.choice([-1.0, 1.0]) * rng.random() * 10.0 ** rng.randint(-30, 30 if typ == 'float32' else 300)
        if typ == 'float32':
            x = struct.unpack('<f', struct.pack('<f', x))[0]
        return x

    def string(self, bound):
        rng = self.rng
        if bound:
            n = rng.randint(0, min(bound, 8))
            return ''.join(rng.choice(ASCII) for _ in range(n))
        n = rng.randint(0, 8)
        return ''.join(rng.choice(MULTI) if rng.random() < 0.2 else rng.choice(ASCII) for _ in range(n))

    def base(self, typ, bound):
        """Returns (rosbags value, json value)."""
        if typ == 'string':
            s = self.string(bound)
            return s, s
        if typ == 'bool':
            b = self.rng.random() < 0.5
            return b, b
        if typ in FLOATS:
            x = self.float_(typ)
            return x, float_to_json(x)
        i = self.int_(typ)
        if typ == 'byte':
            # rosbags packs scalar `byte` as signed int8; on the wire it is the same octet.
            # JSON convention: 0..255.
            return (i - 256 if i > 127 else i), i
        return i, i

    # fields --------------------------------------------------------------
    def elem(self, desc):
        if desc[0] == Nodetype.NAME:
            return self.msg(desc[1])
        return self.base(*desc[1])

    def field(self, desc):
        if desc[0] in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            sub, n = desc[1]
            if desc[0] == Nodetype.ARRAY:
                count = n
            elif n:
                count = self.rng.randint(0, min(n, 8))
            else:
                count = self.rng.randint(0, 4)
            items = [self.elem(sub) for _ in range(count)]
            js = [j for _, j in items]
            if sub[0] == Nodetype.BASE and sub[1][0] != 'string':
                vals = js if sub[1][0] == 'byte' else [v for v, _ in items]
                arr = np.array(vals, dtype=NP_DTYPE[sub[1][0]])
                return arr, js
            return [v for v, _ in items], js
        return self.elem(desc)


def to_json(ts, typename, obj):
    """rosbags message object -> JSON per convention."""
    _consts, fields = ts.fielddefs[typename]
    return {fname: field_to_json(ts, desc, getattr(obj, fname)) for fname, desc in fields}


def _scalar_to_json(ts, desc, v):
    if desc[0] == Nodetype.NAME:
        return to_json(ts, desc[1], v)
    typ = desc[1][0]
    if typ in FLOATS:
        return float_to_json(float(v))
    if typ == 'bool':
        return bool(v)
    if typ == 'string':
        return v
    if typ == 'byte':
        return int(v) & 0xFF  # rosbags reads byte as signed int8
    return int(v)


def field_to_json(ts, desc, v):
    if desc[0] in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        sub = desc[1][0]
        if isinstance(v, np.ndarray):
            v = v.tolist()
        return [_scalar_to_json(ts, sub, x) for x in v]
    return _scalar_to_json(ts, desc, v)


def cmd_gen(args) -> int:
    ts, store = load_typestore()
    bundled, source, mismatches = [], {}, []
    for d in args.interfaces:
        b, s, m = register_dir(ts, d, log=eprint)
        bundled += b
        mismatches += m
        for k, v in s.items():
            source.setdefault(k, v)
    for t in args.type:
        if t not in bundled:
            bundled.append(t)
            source.setdefault(t, 'store' if t in ts.fielddefs else 'missing')

    tb = None
    if args.cross_check_cyclone:
        import ros2peer  # noqa: PLC0415
        tb = ros2peer.TypeBuilder(ts)

    cases = []
    failed = []
    per_type_ok = []
    for typename in bundled:
        if typename not in ts.fielddefs:
            failed.append((typename, 'unknown type'))
            continue
        rng = random.Random(f'{args.seed}/{typename}')
        gen = Gen(ts, rng)
        try:
            for _ in range(args.per_type):
                msg, js = gen.msg(typename)
                le = bytes(ts.serialize_cdr(msg, typename, little_endian=True))
                be = bytes(ts.serialize_cdr(msg, typename, little_endian=False))
                # sanity: rosbags reads its own bytes back to the same value
                for raw in (le, be):
                    back = to_json(ts, typename, ts.deserialize_cdr(raw, typename))
                    if json.dumps(back, sort_keys=False) != json.dumps(js, sort_keys=False):
                        raise AssertionError(f'roundtrip mismatch: {back} != {js}')
                # JSON convention must itself round-trip through text
                assert json.loads(json.dumps(js, allow_nan=False)) == js
                if tb is not None:
                    cy = tb.from_json(typename, js).serialize()
                    if cy != le:
                        raise AssertionError(f'cyclonedds bytes differ: {cy.hex()} != {le.hex()}')
                cases.append({'type': typename, 'value': js, 'le': le.hex(), 'be': be.hex()})
            per_type_ok.append(typename)
        except Exception as exc:  # noqa: BLE001
            failed.append((typename, f'{type(exc).__name__}: {exc}'))

    out = {
        'generator': f'rosbags {pkg_version("rosbags")}',
        'store': store.lower(),
        'seed': args.seed,
        'per_type': args.per_type,
        'cases': cases,
    }
    text = json.dumps(out, ensure_ascii=False, allow_nan=False, indent=None)
    if args.out == '-':
        sys.stdout.write(text + '\n')
    else:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(text + '\n')

    from_store = sorted(t for t in per_type_ok if source.get(t) == 'store')
    from_project = sorted(t for t in per_type_ok if source.get(t) == 'project')
    eprint(f'oracle: rosbags {pkg_version("rosbags")} store={store.lower()} seed={args.seed}')
    eprint(f'oracle: {len(per_type_ok)} types, {len(cases)} cases -> {args.out}')
    eprint(f'oracle: {len(from_store)} types from store: {" ".join(from_store)}')
    eprint(f'oracle: {len(from_project)} types from project text: {" ".join(from_project)}')
    deps = sorted(k for k, v in source.items() if v == 'project' and k not in bundled)
    if deps:
        eprint(f'oracle: extra project-registered dependency types: {" ".join(deps)}')
    for t in sorted(set(mismatches)):
        eprint(f'oracle: WARN project text of {t} differs from the store definition (store used)')
    for t, why in failed:
        eprint(f'oracle: FAIL {t}: {why}')
    if args.cross_check_cyclone:
        eprint('oracle: cyclonedds-python XCDR1 serialization matched rosbags LE bytes for all cases')
    return 1 if failed and args.strict else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    g = sub.add_parser('gen')
    g.add_argument('--interfaces', action='append', default=[],
                   help='interfaces dir (<pkg>/{msg,srv}/*); repeatable')
    g.add_argument('--type', action='append', default=[], help='extra ROS type name to include; repeatable')
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--per-type', type=int, default=5)
    g.add_argument('--out', default='-')
    g.add_argument('--cross-check-cyclone', action='store_true',
                   help='also serialize each value with ros2peer/cyclonedds and require identical LE bytes')
    g.add_argument('--strict', action='store_true', help='exit 1 if any type failed')
    args = p.parse_args(argv)
    return cmd_gen(args)


if __name__ == '__main__':
    sys.exit(main())
