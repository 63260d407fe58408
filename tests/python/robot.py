#!/usr/bin/env python3
"""A simulated ROS 2 robot on Cyclone DDS (the middleware of rmw_cyclonedds), for the mapper tests.

Publishes sensor_msgs/msg/BatteryState on <ns>/battery_state and nav_msgs/msg/Odometry on <ns>/odom
at --rate Hz (BEST_EFFORT, like sensor drivers), and subscribes geometry_msgs/msg/Twist on
<ns>/cmd_vel (RELIABLE). Commands on stdin, one per line:

  set battery <fraction>     percentage published from now on (e.g. 0.42)
  set x <metres>             odometry pose.pose.position.x
  stop | start               stop or resume publishing sensors (for liveness tests)
  quit

stdout: one JSON line per cmd_vel sample received: {"linear_x": .., "angular_z": ..}
stderr: READY when the entities exist, MATCHED cmd_vel n when a cmd_vel writer matched.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ros2peer import TypeBuilder  # noqa: E402
from ros2types import eprint, load_typestore  # noqa: E402


def zero(ts, rosname: str):
    """The default (all-zero) JSON value of a type."""
    from rosbags.typesys.base import Nodetype
    def scalar(desc):
        if desc[0] == Nodetype.NAME:
            return zero(ts, desc[1])
        typ = desc[1][0]
        return '' if typ == 'string' else False if typ == 'bool' else 0.0 if typ in ('float32', 'float64') else 0
    out = {}
    for fname, desc in ts.fielddefs[rosname][1]:
        if desc[0] == Nodetype.ARRAY:
            out[fname] = [scalar(desc[1][0]) for _ in range(desc[1][1])]
        elif desc[0] == Nodetype.SEQUENCE:
            out[fname] = []
        else:
            out[fname] = scalar(desc)
    return out


def merged(base, over):
    """`base` with the keys of `over` replaced (recursively for objects)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--domain', type=int, default=int(os.environ.get('ROS_DOMAIN_ID', '0')))
    p.add_argument('--namespace', default='/robot1')
    p.add_argument('--rate', type=float, default=10.0)
    args = p.parse_args()
    ns = args.namespace.rstrip('/')
    ts, _ = load_typestore()
    tb = TypeBuilder(ts)
    dp = DomainParticipant(args.domain)
    sensor_qos = Qos(Policy.Reliability.BestEffort, Policy.Durability.Volatile, Policy.History.KeepLast(5),
                     Policy.DataRepresentation(use_cdrv0_representation=True))
    cmd_qos = Qos(Policy.Reliability.Reliable(max_blocking_time=duration(seconds=1)), Policy.Durability.Volatile,
                  Policy.History.KeepLast(10), Policy.DataRepresentation(use_cdrv0_representation=True))
    bat_t, odo_t, tw_t = 'sensor_msgs/msg/BatteryState', 'nav_msgs/msg/Odometry', 'geometry_msgs/msg/Twist'
    bat_w = DataWriter(dp, Topic(dp, f'rt{ns}/battery_state', tb.cls(bat_t)), qos=sensor_qos)
    odo_w = DataWriter(dp, Topic(dp, f'rt{ns}/odom', tb.cls(odo_t)), qos=sensor_qos)
    cmd_r = DataReader(dp, Topic(dp, f'rt{ns}/cmd_vel', tb.cls(tw_t)), qos=cmd_qos)
    eprint('READY')
    state = {'battery': 0.9, 'x': 0.0, 'publishing': True}
    period = 1.0 / args.rate
    next_pub = time.monotonic()
    matched = 0
    seq = 0
    while True:
        n = len(cmd_r.get_matched_publications())
        if n != matched:
            matched = n
            eprint(f'MATCHED cmd_vel {n}')
        timeout = max(0.0, next_pub - time.monotonic())
        ready, _, _ = select.select([sys.stdin], [], [], min(timeout, 0.02))
        if ready:
            line = sys.stdin.readline()
            if not line:
                return 0
            words = line.split()
            if words[:1] == ['quit']:
                return 0
            if words[:1] == ['stop']:
                state['publishing'] = False
            elif words[:1] == ['start']:
                state['publishing'] = True
            elif len(words) == 3 and words[0] == 'set':
                state[words[1]] = float(words[2])
            eprint(f'OK {line.strip()}')
        for s in cmd_r.take(N=64):
            info = getattr(s, 'sample_info', None)
            if info is not None and not info.valid_data:
                continue
            j = tb.to_json(tw_t, s)
            print(json.dumps({'linear_x': j['linear']['x'], 'angular_z': j['angular']['z']}), flush=True)
        if time.monotonic() >= next_pub:
            next_pub += period
            if state['publishing']:
                seq += 1
                now = time.time()
                stamp = {'sec': int(now), 'nanosec': int((now % 1) * 1e9)}
                bat_w.write(tb.from_json(bat_t, merged(zero(ts, bat_t), {
                    'header': {'stamp': stamp, 'frame_id': 'base_link'},
                    'voltage': 24.0, 'percentage': state['battery'], 'present': True,
                    'power_supply_status': 2, 'location': 'slot0', 'serial_number': 'SN1'})))
                odo_w.write(tb.from_json(odo_t, merged(zero(ts, odo_t), {
                    'header': {'stamp': stamp, 'frame_id': 'odom'}, 'child_frame_id': 'base_link',
                    'pose': {'pose': {'position': {'x': state['x'], 'y': 0.0, 'z': 0.0},
                                      'orientation': {'x': 0.0, 'y': 0.0, 'z': 0.0, 'w': 1.0}}}})))


if __name__ == '__main__':
    sys.exit(main())
