#!/usr/bin/env python3
"""Sequence-checking Cyclone DDS publisher/subscriber for loss, duplicate and order tests.

Type std_msgs/msg/String (DDS name ``std_msgs::msg::dds_::String_``, XCDR1 like rmw_cyclonedds)
with data = the decimal counter 1..count.

  seqpeer.py pub --topic rt/seq --rate 100 --count 3000 [--reliable|--best-effort]
                 [--depth N | --keep-all] [--wait-readers N] [--match-timeout S] [--settle S]
                 [--linger S] [--domain ID]
  seqpeer.py sub --topic rt/robot1/seq --expect 3000 --timeout 120 [--reliable|--best-effort]
                 [--depth N | --keep-all] [--domain ID]

pub: publishes 1..count at --rate per second on an absolute schedule (sample i is due at
  t0 + (i-1)/rate, no drift; --rate 0 = as fast as possible), prints {"published": n} on stdout
  (n = samples written without error), then lingers --linger s (a reliable writer waits for acks
  within that time) and exits 0 (1 if a write failed, 3 if --wait-readers was not reached within
  --match-timeout). Default QoS: reliable, keep-last 10, volatile. stderr: CREATED, MATCHED n, DONE.
sub: prints `ready` on stdout once its reader exists, receives until every value 1..expect was
  seen or --timeout s passed, then prints one JSON line
  {"received", "unique", "duplicates", "out_of_order", "missing_count", "missing_first" (up to 20),
   "invalid", "first", "last"} and exits 0 if complete and clean, 1 otherwise. Default QoS:
  best-effort (matches any writer), keep-last 1000 (so the Python reader's own cache does not
  drop samples), volatile. stderr: MATCHED n.
  - duplicates: samples whose value was already received;
  - out_of_order: new values that arrived after a higher value;
  - invalid: samples whose data is not an integer in 1..expect;
  - first/last: the first and the last value received (null if none).
Both take --domain (default $ROS_DOMAIN_ID or 0). Usage errors exit 64.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from cyclonedds.core import InstanceState, Policy, Qos, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import make_idl_struct
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

# @final struct (IdlStruct default) -> XCDR1 plain CDR, as rmw_cyclonedds.
String_ = make_idl_struct('std_msgs_msg_String', 'std_msgs::msg::dds_::String_', {'data': str})


def eprint(*a):
    print(*a, file=sys.stderr, flush=True)


def out(line: str):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def make_qos(args) -> Qos:
    rel = (Policy.Reliability.Reliable(max_blocking_time=duration(seconds=10))
           if args.reliability == 'reliable' else Policy.Reliability.BestEffort)
    hist = Policy.History.KeepAll if args.keep_all else Policy.History.KeepLast(args.depth)
    return Qos(rel, Policy.Durability.Volatile, hist,
               Policy.DataRepresentation(use_cdrv0_representation=True))


def open_topic(args):
    dp = DomainParticipant(args.domain)
    return dp, Topic(dp, args.topic, String_)


def cmd_pub(args) -> int:
    dp, topic = open_topic(args)
    writer = DataWriter(dp, topic, qos=make_qos(args))
    eprint(f'CREATED writer topic={args.topic}')
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
                out(json.dumps({'published': 0}))
                return 3
            time.sleep(0.02)
        # Discovery is asymmetric: the reader may not know this writer yet.
        if args.settle > 0:
            time.sleep(args.settle)

    published = 0
    failed = 0
    t0 = time.monotonic()
    for i in range(1, args.count + 1):
        if args.rate > 0:
            due = t0 + (i - 1) / args.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        try:
            writer.write(String_(data=str(i)))
            published += 1
        except Exception as exc:  # noqa: BLE001 - a failed write is reported, not fatal
            failed += 1
            if failed <= 10:
                eprint(f'WRITE FAILED {i}: {type(exc).__name__}: {exc}')
    elapsed = time.monotonic() - t0
    eprint(f'WROTE {published} in {elapsed:.2f} s ({failed} failed)')
    out(json.dumps({'published': published}))

    end = time.monotonic() + args.linger
    if args.reliability == 'reliable' and args.linger > 0 and hasattr(writer, 'wait_for_acks'):
        acked = writer.wait_for_acks(duration(seconds=args.linger))
        eprint('ACKED' if acked else f'NOT ACKED within {args.linger} s')
    left = end - time.monotonic()
    if left > 0:
        time.sleep(left)
    eprint('DONE')
    return 0 if failed == 0 else 1


class Tally:
    """Counts what arrived against the expected sequence 1..expect."""

    def __init__(self, expect: int):
        self.expect = expect
        self.seen = bytearray(expect + 1)
        self.received = 0
        self.unique = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.invalid = 0
        self.max_seen = 0
        self.first = None
        self.last = None

    def add(self, data: str):
        self.received += 1
        try:
            v = int(data)
        except (TypeError, ValueError):
            self.invalid += 1
            return
        if not 1 <= v <= self.expect:
            self.invalid += 1
            return
        if self.first is None:
            self.first = v
        self.last = v
        if self.seen[v]:
            self.duplicates += 1
            return
        self.seen[v] = 1
        self.unique += 1
        if v < self.max_seen:
            self.out_of_order += 1
        else:
            self.max_seen = v

    def complete(self) -> bool:
        return self.unique >= self.expect

    def report(self) -> dict:
        missing = [v for v in range(1, self.expect + 1) if not self.seen[v]]
        return {
            'received': self.received,
            'unique': self.unique,
            'duplicates': self.duplicates,
            'out_of_order': self.out_of_order,
            'missing_count': len(missing),
            'missing_first': missing[:20],
            'invalid': self.invalid,
            'first': self.first,
            'last': self.last,
        }

    def clean(self) -> bool:
        return (self.complete() and self.duplicates == 0 and self.out_of_order == 0
                and self.invalid == 0)


def cmd_sub(args) -> int:
    dp, topic = open_topic(args)
    reader = DataReader(dp, topic, qos=make_qos(args))
    cond = ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any)
    ws = WaitSet(dp)
    ws.attach(cond)
    out('ready')
    tally = Tally(args.expect)
    matched = 0
    deadline = time.monotonic() + args.timeout
    while not tally.complete():
        n = len(reader.get_matched_publications())
        if n != matched:
            matched = n
            eprint(f'MATCHED {n}')
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            eprint(f'TIMEOUT after {tally.unique}/{args.expect} values')
            break
        ws.wait(duration(seconds=min(remaining, 0.2)))
        try:
            batch = reader.take(N=1024)
        except Exception as exc:  # noqa: BLE001 - an undecodable sample counts as invalid
            eprint(f'ERROR cannot deserialize received sample: {type(exc).__name__}: {exc}')
            tally.received += 1
            tally.invalid += 1
            continue
        for s in batch:
            info = getattr(s, 'sample_info', None)
            if info is None or not info.valid_data:
                continue
            tally.add(s.data)
    out(json.dumps(tally.report()))
    return 0 if tally.clean() else 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(64, f'{self.prog}: error: {message}\n')


def main(argv=None) -> int:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True, parser_class=_Parser)

    def common(sp, reliability: str, depth: int):
        sp.add_argument('--topic', required=True, help='DDS topic name, e.g. rt/seq')
        rel = sp.add_mutually_exclusive_group()
        rel.add_argument('--reliable', dest='reliability', action='store_const', const='reliable')
        rel.add_argument('--best-effort', dest='reliability', action='store_const', const='best_effort')
        sp.set_defaults(reliability=reliability)
        hist = sp.add_mutually_exclusive_group()
        hist.add_argument('--depth', type=int, default=depth, help=f'KEEP_LAST depth (default {depth})')
        hist.add_argument('--keep-all', action='store_true', help='KEEP_ALL history')
        sp.add_argument('--domain', type=int, default=int(os.environ.get('ROS_DOMAIN_ID', '0')))

    sp = sub.add_parser('pub')
    common(sp, 'reliable', 10)
    sp.add_argument('--rate', type=float, default=100.0, help='samples per second (0: unpaced)')
    sp.add_argument('--count', type=int, required=True)
    sp.add_argument('--wait-readers', type=int, default=0)
    sp.add_argument('--match-timeout', type=float, default=30.0)
    sp.add_argument('--settle', type=float, default=0.3,
                    help='seconds to wait after --wait-readers matched, before writing')
    sp.add_argument('--linger', type=float, default=2.0)

    sp = sub.add_parser('sub')
    common(sp, 'best_effort', 1000)
    sp.add_argument('--expect', type=int, required=True)
    sp.add_argument('--timeout', type=float, default=60.0)

    args = p.parse_args(argv)
    if args.depth < 1:
        p.error('--depth must be >= 1')
    if args.cmd == 'pub':
        if args.count < 0 or args.rate < 0:
            p.error('--count and --rate must be >= 0')
        return cmd_pub(args)
    if args.expect < 0:
        p.error('--expect must be >= 0')
    return cmd_sub(args)


if __name__ == '__main__':
    sys.exit(main())
