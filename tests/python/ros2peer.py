#!/usr/bin/env python3
"""A ROS 2-like Cyclone DDS peer (publisher or subscriber) for any ROS 2 message type.

Types come from rosbags' typestore (plus optional .msg/.srv from --extra-msg-dir laid out as
<dir>/<pkg>/{msg,srv}/*). Cyclone DDS Python IDL classes are generated from the rosbags field
definitions with the DDS type names rmw_cyclonedds uses (``pkg::msg::dds_::Name_``), as
@final structs serialized as XCDR1 (plain CDR, encapsulation CDR_LE ``00 01 00 00``), which is
what rmw_cyclonedds puts on the wire.

  ros2peer.py pub --topic rt/chatter --type std_msgs/msg/String --values-file values.json
  ros2peer.py sub --topic rt/chatter --type std_msgs/msg/String --count N

Values are JSON per the shared convention (see tests/python/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from cyclonedds.core import Qos, Policy, ReadCondition, SampleState, ViewState, InstanceState, WaitSet
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import make_idl_struct
from cyclonedds.idl import types as T
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration
from rosbags.typesys.base import Nodetype

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ros2types import (  # noqa: E402
    eprint,
    float_from_json,
    float_to_json,
    is_uint8_like,
    load_typestore,
    register_dir,
)

PRIM = {
    'bool': bool,
    'byte': T.uint8,
    'char': T.uint8,
    'uint8': T.uint8,
    'int8': T.int8,
    'int16': T.int16,
    'uint16': T.uint16,
    'int32': T.int32,
    'uint32': T.uint32,
    'int64': T.int64,
    'uint64': T.uint64,
    'float32': T.float32,
    'float64': T.float64,
}
FLOATS = ('float32', 'float64')


def dds_type_name(rosname: str) -> str:
    pkg, kind, name = rosname.split('/')
    return f'{pkg}::{kind}::dds_::{name}_'


class TypeBuilder:
    """Builds cyclonedds IdlStruct classes from rosbags fielddefs and converts JSON values."""

    def __init__(self, ts):
        self.ts = ts
        self.classes = {}

    # ---- IDL class generation ----
    def cls(self, rosname: str):
        if rosname in self.classes:
            return self.classes[rosname]
        _consts, fields = self.ts.fielddefs[rosname]
        ann = {fname: self._idl_type(desc) for fname, desc in fields}
        pkg, kind, name = rosname.split('/')
        # IdlStruct defaults to @final extensibility -> XCDR1 plain CDR.
        cls = make_idl_struct(f'{pkg}_{kind}_{name}', dds_type_name(rosname), ann)
        self.classes[rosname] = cls
        return cls

    def _base(self, desc):
        if desc[0] == Nodetype.NAME:
            return self.cls(desc[1])
        assert desc[0] == Nodetype.BASE, desc
        typ, bound = desc[1]
        if typ == 'string':
            return T.bounded_str[bound] if bound else str
        if typ in PRIM:
            return PRIM[typ]
        raise TypeError(f'unsupported primitive {typ}')

    def _idl_type(self, desc):
        if desc[0] == Nodetype.ARRAY:
            sub, length = desc[1]
            # array[uint8, N] -> ByteArrayMachine (bytes), fast
            return T.array[self._base(sub), length]
        if desc[0] == Nodetype.SEQUENCE:
            sub, bound = desc[1]
            # NB: plain `bytes` would be a faster sequence<octet>, but cyclonedds-python cannot build
            # an XTypes type object for it; sequence[uint8] uses struct.pack/unpack of the whole
            # run (~0.1 s per MiB), which is fast enough.
            if bound:
                return T.sequence[self._base(sub), bound]
            return T.sequence[self._base(sub)]
        return self._base(desc)

    # ---- JSON -> IDL ----
    def from_json(self, rosname: str, value):
        _consts, fields = self.ts.fielddefs[rosname]
        if not isinstance(value, dict):
            raise ValueError(f'{rosname}: expected object, got {type(value).__name__}')
        kwargs = {}
        for fname, desc in fields:
            if fname not in value:
                raise ValueError(f'{rosname}: missing field {fname}')
            kwargs[fname] = self._field_from_json(desc, value[fname])
        extra = set(value) - {f for f, _ in fields}
        if extra:
            raise ValueError(f'{rosname}: unknown fields {sorted(extra)}')
        return self.cls(rosname)(**kwargs)

    def _scalar_from_json(self, desc, v):
        if desc[0] == Nodetype.NAME:
            return self.from_json(desc[1], v)
        typ = desc[1][0]
        if typ == 'string':
            return str(v)
        if typ == 'bool':
            return bool(v)
        if typ in FLOATS:
            return float_from_json(v)
        return int(v)

    def _field_from_json(self, desc, v):
        if desc[0] in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            sub, n = desc[1]
            if desc[0] == Nodetype.ARRAY and len(v) != n:
                raise ValueError(f'array needs {n} elements, got {len(v)}')
            if is_uint8_like(sub):
                # array[uint8, N] -> ByteArrayMachine wants bytes; sequence[uint8] packs any iterable
                return bytes(v) if desc[0] == Nodetype.ARRAY else list(v)
            return [self._scalar_from_json(sub, x) for x in v]
        return self._scalar_from_json(desc, v)

    # ---- IDL -> JSON ----
    def to_json(self, rosname: str, obj):
        _consts, fields = self.ts.fielddefs[rosname]
        return {fname: self._field_to_json(desc, getattr(obj, fname)) for fname, desc in fields}

    def _scalar_to_json(self, desc, v):
        if desc[0] == Nodetype.NAME:
            return self.to_json(desc[1], v)
        typ = desc[1][0]
        if typ in FLOATS:
            return float_to_json(v)
        if typ == 'bool':
            return bool(v)
        if typ == 'string':
            return v
        return int(v)

    def _field_to_json(self, desc, v):
        if desc[0] in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            sub = desc[1][0]
            if isinstance(v, (bytes, bytearray, memoryview)):
                return list(bytes(v))
            if sub[0] == Nodetype.BASE and sub[1][0] in FLOATS:
                return [float_to_json(x) for x in v]
            if sub[0] == Nodetype.BASE and sub[1][0] not in ('string', 'bool'):
                return v if isinstance(v, list) else [int(x) for x in v]  # already Python ints
            return [self._scalar_to_json(sub, x) for x in v]
        return self._scalar_to_json(desc, v)


def make_qos(args) -> Qos:
    rel = (Policy.Reliability.Reliable(max_blocking_time=duration(seconds=10))
           if args.reliability == 'reliable' else Policy.Reliability.BestEffort)
    dur = Policy.Durability.TransientLocal if args.durability == 'transient_local' else Policy.Durability.Volatile
    hist = Policy.History.KeepAll if args.history == 'keep_all' else Policy.History.KeepLast(args.depth)
    policies = [
        rel,
        dur,
        hist,
        # XCDR1 only, like rmw_cyclonedds.
        Policy.DataRepresentation(use_cdrv0_representation=True),
    ]
    if args.durability == 'transient_local':
        # Like rmw_cyclonedds: Cyclone keeps historical data for late joiners per the
        # durability-service history (default KEEP_LAST 1), so mirror the history QoS there.
        policies.append(Policy.DurabilityService(cleanup_delay=0, history=hist, max_samples=-1,
                                                 max_instances=-1, max_samples_per_instance=-1))
    return Qos(*policies)


def setup(args):
    ts, _store = load_typestore()
    if args.extra_msg_dir:
        for d in args.extra_msg_dir:
            register_dir(ts, d, log=eprint)
    if args.type not in ts.fielddefs:
        eprint(f'ERROR unknown type {args.type}')
        sys.exit(4)
    tb = TypeBuilder(ts)
    tb.cls(args.type)
    return tb


def open_topic(args, tb):
    dp = DomainParticipant(args.domain)
    topic = Topic(dp, args.topic, tb.cls(args.type))
    return dp, topic


def cmd_pub(args) -> int:
    with open(args.values_file, encoding='utf-8') as f:
        values = json.load(f)
    if not isinstance(values, list):
        eprint('ERROR values file must hold a JSON list')
        return 4
    tb = setup(args)
    try:
        samples = [tb.from_json(args.type, v) for v in values]
    except (ValueError, TypeError, KeyError) as exc:
        eprint(f'ERROR bad value for {args.type}: {exc}')
        return 4
    dp, topic = open_topic(args, tb)
    qos = make_qos(args)
    writer = DataWriter(dp, topic, qos=qos)
    eprint(f'CREATED writer topic={args.topic} type={args.type}')

    if args.wait_readers > 0:
        deadline = time.monotonic() + args.match_timeout
        last = -1
        while True:
            n = len(writer.get_matched_subscriptions())
            if n != last:
                eprint(f'MATCHED {n}')
                last = n
            if n >= args.wait_readers:
                break
            if time.monotonic() > deadline:
                eprint(f'MATCH TIMEOUT {n} < {args.wait_readers}')
                return 3
            time.sleep(0.02)
        # Discovery is asymmetric: the reader may not know this writer yet when the writer
        # already matched it, and a reader drops (best-effort) data from unknown writers.
        if args.settle > 0 and not args.start_on_stdin:
            time.sleep(args.settle)

    if args.start_on_stdin:
        # The caller says when every side has matched (event-driven, no settle guess).
        eprint('WAITING')
        sys.stdin.readline()

    for i, s in enumerate(samples):
        if i and args.interval_ms > 0:
            time.sleep(args.interval_ms / 1000.0)
        writer.write(s)
        eprint(f'WROTE {i}')

    if args.reliability == 'reliable' and hasattr(writer, 'wait_for_acks'):
        # Stay until every matched reader acknowledged (repairs on a loaded machine).
        eprint('ACKED' if writer.wait_for_acks(duration(seconds=30)) else 'NOT ACKED within 30 s')
    if args.linger > 0:
        time.sleep(args.linger)
    eprint('DONE')
    return 0


def cmd_sub(args) -> int:
    tb = setup(args)
    dp, topic = open_topic(args, tb)
    qos = make_qos(args)
    reader = DataReader(dp, topic, qos=qos)
    cond = ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any)
    ws = WaitSet(dp)
    ws.attach(cond)
    eprint('READY')
    got = 0
    matched = 0
    deadline = time.monotonic() + args.timeout
    out = sys.stdout
    while got < args.count:
        n = len(reader.get_matched_publications())
        if n != matched:
            matched = n
            eprint(f'MATCHED {n}')
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            eprint(f'TIMEOUT after {got}/{args.count} samples')
            return 2
        ws.wait(duration(seconds=min(remaining, 0.05 if matched == 0 else 0.5)))
        try:
            batch = reader.take(N=256)
        except Exception as exc:  # noqa: BLE001 - a sample the peer cannot decode is a test failure
            eprint(f'ERROR cannot deserialize received sample: {type(exc).__name__}: {exc}')
            return 3
        for s in batch:
            info = getattr(s, 'sample_info', None)
            if info is None or not info.valid_data:
                continue
            out.write(json.dumps(tb.to_json(args.type, s), ensure_ascii=False, allow_nan=False) + '\n')
            out.flush()
            got += 1
            if got >= args.count:
                break
    eprint(f'RECEIVED {got}')
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # exit 64 (EX_USAGE) so a usage error is not mistaken for the sub's timeout (2)
        self.print_usage(sys.stderr)
        self.exit(64, f'{self.prog}: error: {message}\n')


def main(argv=None) -> int:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True, parser_class=_Parser)

    def common(sp):
        sp.add_argument('--topic', required=True, help='DDS topic name, e.g. rt/chatter')
        sp.add_argument('--type', required=True, help='ROS type, e.g. std_msgs/msg/String')
        sp.add_argument('--reliability', choices=['reliable', 'best_effort'], default='reliable')
        sp.add_argument('--durability', choices=['volatile', 'transient_local'], default='volatile')
        sp.add_argument('--depth', type=int, default=10)
        sp.add_argument('--history', choices=['keep_last', 'keep_all'], default='keep_last',
                        help='keep_last uses --depth (default). A slow Python reader with a small depth '
                             'can lose samples of a fast burst from its own cache; keep_all avoids that')
        sp.add_argument('--extra-msg-dir', action='append', default=[],
                        help='interfaces dir (<pkg>/{msg,srv}/*) for types not in rosbags store; repeatable')
        sp.add_argument('--domain', type=int, default=int(os.environ.get('ROS_DOMAIN_ID', '0')))

    sp = sub.add_parser('pub')
    common(sp)
    sp.add_argument('--values-file', required=True)
    sp.add_argument('--wait-readers', type=int, default=0)
    sp.add_argument('--match-timeout', type=float, default=20.0)
    sp.add_argument('--interval-ms', type=float, default=0.0)
    sp.add_argument('--linger', type=float, default=2.0)
    sp.add_argument('--start-on-stdin', action='store_true',
                    help='after matching, wait for a line on stdin before writing (prints WAITING)')
    sp.add_argument('--settle', type=float, default=0.3,
                    help='seconds to wait after --wait-readers matched, before writing')

    sp = sub.add_parser('sub')
    common(sp)
    sp.add_argument('--count', type=int, required=True)
    sp.add_argument('--timeout', type=float, default=30.0)

    args = p.parse_args(argv)
    if args.cmd == 'pub':
        return cmd_pub(args)
    return cmd_sub(args)


if __name__ == '__main__':
    sys.exit(main())
