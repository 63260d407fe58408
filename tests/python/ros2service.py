#!/usr/bin/env python3
"""A ROS 2-like Cyclone DDS service server and client, in rmw_cyclonedds' wire format.

A client writes requests on ``rq/<service>Request`` (DDS type ``pkg::srv::dds_::Name_Request_``)
and the server answers on ``rr/<service>Reply`` (``pkg::srv::dds_::Name_Response_``). Each payload
is the CDR encapsulation (``00 01 00 00``, XCDR1 little endian), a 16-byte request header
``{uint64 client_guid; int64 sequence_number}``, then the body. The header is modelled as the two
leading members of the IDL struct, which gives exactly those bytes. The server copies the
request's header into the reply; a client keeps only replies with its own client_guid and the
sequence number of its pending call.

  ros2service.py server --service /add_two_ints --type example_interfaces/srv/AddTwoInts \
      [--domain N] [--count N] [--timeout S] [--delay-ms MS]
  ros2service.py client --service /robot1/add_two_ints --type example_interfaces/srv/AddTwoInts \
      --calls N [--a A --b B] [--b-step K] [--timeout S] [--wait-server S]

Types: ``example_interfaces/srv/AddTwoInts`` (sum = a + b) and ``std_srvs/srv/Trigger`` (success
true, message ``triggered <n>``), from the project's ``ros2/interfaces`` (rosbags' store has no
services) plus ``--extra-msg-dir``.

Server: stderr ``READY``, ``MATCHED requests=<n> replies=<m>``, ``ANSWERED <n>``, ``DONE``; stdout
one JSON line per answered request, ``{"client_guid", "sequence", "request", "response"}``; exit 0
after ``--count`` requests (or at ``--timeout`` when ``--count`` is 0), 2 = ``--timeout`` before
``--count``, 4 = unknown/unsupported type, 64 = usage.

Client: stderr ``READY``, ``MATCHED``, ``CALL <i> seq=<s>``, ``DONE``; stdout one JSON line per
answered call (AddTwoInts ``{"a", "b", "sum", "ms"}``, Trigger ``{"success", "message", "ms"}``);
exit 0 if all calls were answered, 2 = no server matched within ``--wait-server``, 3 = a call got
no reply within ``--timeout`` (the client stops there), 4 = unknown/unsupported type, 5 = a wrong
AddTwoInts sum, 64 = usage.

QoS as rmw's service default: reliable, volatile, keep last 10, XCDR1 only. ``CYCLONEDDS_URI`` is
honoured by Cyclone itself.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time

from cyclonedds.core import InstanceState, Policy, Qos, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import make_idl_struct
from cyclonedds.idl import types as T
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ros2peer import TypeBuilder, dds_type_name  # noqa: E402
from ros2types import EMPTY_DESC, EMPTY_FIELD, eprint, load_typestore, register_dir  # noqa: E402

ADD_TWO_INTS = 'example_interfaces/srv/AddTwoInts'
TRIGGER = 'std_srvs/srv/Trigger'
SUPPORTED = (ADD_TWO_INTS, TRIGGER)
HEADER_FIELDS = ('client_guid', 'sequence_number')
DEFAULT_INTERFACES = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'ros2', 'interfaces'))
POLL_S = 0.01


class ServiceTypes:
    """Wire classes (header + body) of one service type and JSON conversion of the body."""

    def __init__(self, srv: str, extra_dirs):
        ts, _store = load_typestore()
        for d in extra_dirs:
            register_dir(ts, d, log=eprint)
        self.tb = TypeBuilder(ts)
        self.ts = ts
        self.srv = srv
        self.request = self._wire_class(f'{srv}_Request')
        self.response = self._wire_class(f'{srv}_Response')

    def _fields(self, rosname):
        _consts, fields = self.ts.fielddefs[rosname]
        # rosidl gives a memberless struct one uint8 member (store types may lack it).
        return list(fields) or [(EMPTY_FIELD, EMPTY_DESC)]

    def _wire_class(self, rosname):
        ann = {'client_guid': T.uint64, 'sequence_number': T.int64}
        for fname, desc in self._fields(rosname):
            if fname in ann:
                raise TypeError(f'{rosname}: field {fname} clashes with the request header')
            ann[fname] = self.tb._idl_type(desc)  # noqa: SLF001 - shared helper of ros2peer
        pkg, kind, name = rosname.split('/')
        # @final (XCDR1 plain CDR) like every ros2peer type; DDS name as rmw_cyclonedds.
        return make_idl_struct(f'{pkg}_{kind}_{name}_wire', dds_type_name(rosname), ann)

    def make(self, which: str, client_guid: int, seq: int, body: dict):
        rosname = f'{self.srv}_{which}'
        cls = self.request if which == 'Request' else self.response
        kwargs = {'client_guid': client_guid, 'sequence_number': seq}
        for fname, desc in self._fields(rosname):
            kwargs[fname] = self.tb._field_from_json(desc, body[fname])  # noqa: SLF001
        return cls(**kwargs)

    def body_json(self, which: str, sample) -> dict:
        rosname = f'{self.srv}_{which}'
        return {fname: self.tb._field_to_json(desc, getattr(sample, fname))  # noqa: SLF001
                for fname, desc in self._fields(rosname)}


def service_qos() -> Qos:
    # rmw_qos_profile_services_default; XCDR1 only like rmw_cyclonedds.
    return Qos(
        Policy.Reliability.Reliable(max_blocking_time=duration(seconds=10)),
        Policy.Durability.Volatile,
        Policy.History.KeepLast(10),
        Policy.DataRepresentation(use_cdrv0_representation=True),
    )


def topic_names(service: str):
    name = service.lstrip('/')
    if not name:
        raise ValueError('empty service name')
    return f'rq/{name}Request', f'rr/{name}Reply'


def setup(args):
    if args.type not in SUPPORTED:
        eprint(f'ERROR unsupported service type {args.type} (supported: {", ".join(SUPPORTED)})')
        sys.exit(4)
    dirs = list(args.extra_msg_dir)
    if os.path.isdir(DEFAULT_INTERFACES):
        dirs.insert(0, DEFAULT_INTERFACES)
    try:
        types = ServiceTypes(args.type, dirs)
    except KeyError as exc:
        eprint(f'ERROR unknown type {exc} (give --extra-msg-dir)')
        sys.exit(4)
    try:
        rq, rr = topic_names(args.service)
    except ValueError as exc:
        eprint(f'ERROR {exc}')
        sys.exit(64)
    return types, rq, rr


def valid_samples(reader):
    for s in reader.take(N=64):
        info = getattr(s, 'sample_info', None)
        if info is not None and info.valid_data:
            yield s, info


def participant_of_publication(reader, handle):
    try:
        data = reader.get_matched_publication_data(handle)
    except Exception:  # noqa: BLE001 - the writer may be gone already
        return None
    return None if data is None else data.participant_key


def writer_reaches_participant(writer, participant_key) -> bool:
    for h in writer.get_matched_subscriptions():
        try:
            data = writer.get_matched_subscription_data(h)
        except Exception:  # noqa: BLE001
            continue
        if data is not None and data.participant_key == participant_key:
            return True
    return False


# ---- server ----

def answer(types: ServiceTypes, req_body: dict, n: int) -> dict:
    if types.srv == ADD_TWO_INTS:
        total = req_body['a'] + req_body['b']
        # int64 wrap-around, as C++ would do.
        total = (total + 2**63) % 2**64 - 2**63
        return {'sum': total}
    return {'success': True, 'message': f'triggered {n}'}


def cmd_server(args) -> int:
    types, rq, rr = setup(args)
    dp = DomainParticipant(args.domain)
    qos = service_qos()
    req_topic = Topic(dp, rq, types.request)
    rep_topic = Topic(dp, rr, types.response)
    # Like rmw_cyclonedds: the reply writer first, then the request reader.
    writer = DataWriter(dp, rep_topic, qos=qos)
    reader = DataReader(dp, req_topic, qos=qos)
    ws = WaitSet(dp)
    ws.attach(ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any))
    eprint(f'READY service={args.service} type={args.type} request_topic={rq} reply_topic={rr}')

    deadline = time.monotonic() + args.timeout
    answered = 0
    matched = (-1, -1)
    out = sys.stdout
    while args.count <= 0 or answered < args.count:
        now_matched = (len(reader.get_matched_publications()), len(writer.get_matched_subscriptions()))
        if now_matched != matched:
            matched = now_matched
            eprint(f'MATCHED requests={matched[0]} replies={matched[1]}')
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if args.count > 0:
                eprint(f'TIMEOUT after {answered}/{args.count} requests')
                return 2
            break
        ws.wait(duration(seconds=min(remaining, 0.2)))
        for req, info in valid_samples(reader):
            if args.delay_ms > 0:
                time.sleep(args.delay_ms / 1000.0)
            # Like rmw_cyclonedds: do not reply before the reply writer matched a reader of the
            # requesting participant, or a volatile reply would be lost (asymmetric discovery).
            pkey = participant_of_publication(reader, info.publication_handle)
            if pkey is not None:
                until = time.monotonic() + args.reply_match_timeout
                while not writer_reaches_participant(writer, pkey):
                    if time.monotonic() > until:
                        eprint(f'WARN no reply reader of the client participant {pkey} matched; replying anyway')
                        break
                    time.sleep(POLL_S)
            answered += 1
            body = types.body_json('Request', req)
            resp = answer(types, body, answered)
            writer.write(types.make('Response', req.client_guid, req.sequence_number, resp))
            out.write(json.dumps({'client_guid': req.client_guid, 'sequence': req.sequence_number,
                                  'request': body, 'response': resp}) + '\n')
            out.flush()
            eprint(f'ANSWERED {answered}')
            if 0 < args.count <= answered:
                break
    # Stay until every matched reader acknowledged the replies.
    if not writer.wait_for_acks(duration(seconds=args.ack_timeout)):
        eprint(f'NOT ACKED within {args.ack_timeout} s')
    eprint('DONE')
    return 0


# ---- client ----

def wait_for_server(reader, writer, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    last = None
    while True:
        state = (len(writer.get_matched_subscriptions()), len(reader.get_matched_publications()))
        if state != last:
            last = state
            eprint(f'MATCHED request_readers={state[0]} reply_writers={state[1]}')
        if state[0] > 0 and state[1] > 0:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)


def cmd_client(args) -> int:
    types, rq, rr = setup(args)
    dp = DomainParticipant(args.domain)
    qos = service_qos()
    req_topic = Topic(dp, rq, types.request)
    rep_topic = Topic(dp, rr, types.response)
    # Like rmw_cyclonedds: the reply reader exists before the request writer.
    reader = DataReader(dp, rep_topic, qos=qos)
    writer = DataWriter(dp, req_topic, qos=qos)
    ws = WaitSet(dp)
    ws.attach(ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any))
    guid = args.client_guid if args.client_guid is not None else secrets.randbits(64)
    eprint(f'READY service={args.service} type={args.type} client_guid={guid}')

    if not wait_for_server(reader, writer, args.wait_server):
        eprint(f'NO SERVER within {args.wait_server} s')
        return 2

    out = sys.stdout
    others = 0
    for i in range(args.calls):
        seq = i + 1
        if types.srv == ADD_TWO_INTS:
            b = args.b + i * args.b_step
            body = {'a': args.a, 'b': (b + 2**63) % 2**64 - 2**63}
        else:
            body = {EMPTY_FIELD: 0}
        t0 = time.monotonic()
        writer.write(types.make('Request', guid, seq, body))
        eprint(f'CALL {i} seq={seq}')
        deadline = t0 + args.timeout
        reply = None
        while reply is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                eprint(f'TIMEOUT call {i} seq={seq} after {i}/{args.calls} answered')
                return 3
            ws.wait(duration(seconds=min(remaining, 0.5)))
            for rep, _info in valid_samples(reader):
                if rep.client_guid == guid and rep.sequence_number == seq:
                    reply = rep
                else:
                    others += 1  # another client's reply, or a late one of ours
        ms = round((time.monotonic() - t0) * 1000.0, 3)
        resp = types.body_json('Response', reply)
        if types.srv == ADD_TWO_INTS:
            line = {'a': body['a'], 'b': body['b'], 'sum': resp['sum'], 'ms': ms}
        else:
            line = {'success': resp['success'], 'message': resp['message'], 'ms': ms}
        out.write(json.dumps(line, ensure_ascii=False) + '\n')
        out.flush()
        if types.srv == ADD_TWO_INTS and resp['sum'] != answer(types, body, seq)['sum']:
            eprint(f'WRONG SUM call {i}: {body} -> {resp["sum"]}')
            return 5
    eprint(f'DONE {args.calls} calls, {others} replies for others ignored')
    return 0


def int_in(lo: int, hi: int):
    """argparse type: an integer (decimal or 0x...) in [lo, hi]."""
    def parse(text: str) -> int:
        v = int(text, 0)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f'{v} not in [{lo}, {hi}]')
        return v
    return parse


INT64 = int_in(-2**63, 2**63 - 1)
UINT64 = int_in(0, 2**64 - 1)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # exit 64 (EX_USAGE) so a usage error is not mistaken for a timeout
        self.print_usage(sys.stderr)
        self.exit(64, f'{self.prog}: error: {message}\n')


def main(argv=None) -> int:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True, parser_class=_Parser)

    def common(sp):
        sp.add_argument('--service', required=True, help='ROS service name, e.g. /add_two_ints')
        sp.add_argument('--type', required=True, help=f'service type: {" or ".join(SUPPORTED)}')
        sp.add_argument('--domain', type=int, default=int(os.environ.get('ROS_DOMAIN_ID', '0')))
        sp.add_argument('--extra-msg-dir', action='append', default=[],
                        help=f'interfaces dir (<pkg>/{{msg,srv}}/*) besides {DEFAULT_INTERFACES}; repeatable')

    sp = sub.add_parser('server')
    common(sp)
    sp.add_argument('--count', type=int, default=0, help='exit after this many answered requests (0 = until --timeout)')
    sp.add_argument('--timeout', type=float, default=60.0, help='seconds to serve at most')
    sp.add_argument('--delay-ms', type=float, default=0.0, help='delay before each reply')
    sp.add_argument('--reply-match-timeout', type=float, default=5.0,
                    help='seconds to wait for the reply writer to match the caller before replying anyway')
    sp.add_argument('--ack-timeout', type=float, default=10.0,
                    help='seconds to wait at exit for readers to acknowledge the replies')

    sp = sub.add_parser('client')
    common(sp)
    sp.add_argument('--calls', type=int, required=True)
    sp.add_argument('--a', type=INT64, default=1)
    sp.add_argument('--b', type=INT64, default=2)
    sp.add_argument('--b-step', type=INT64, default=0, help='call i sends b + i * b-step')
    sp.add_argument('--timeout', type=float, default=10.0, help='seconds to wait for each reply')
    sp.add_argument('--wait-server', type=float, default=20.0, help='seconds to wait for a matched server')
    sp.add_argument('--client-guid', type=UINT64, default=None,
                    help='fixed client_guid (default: random 64-bit)')

    args = p.parse_args(argv)
    if args.cmd == 'server':
        return cmd_server(args)
    return cmd_client(args)


if __name__ == '__main__':
    sys.exit(main())
