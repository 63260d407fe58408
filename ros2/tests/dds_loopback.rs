//! Loopback tests of `ros2::dds`: every participant here is LOCALHOST-only
//! (advertises and sends on 127.0.0.1 only) and uses a domain id derived from
//! the process id, so concurrent runs do not see each other.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use ros2::dds::{
    DdsError, DiscoveryEvent, DiscoveryRange, Durability, History, Participant, ParticipantConfig,
    Qos, RawReader, RawSample, RawWriter, Reliability, Representation,
};
use tokio::time::timeout;

/// Generous bound for anything that needs discovery.
const T: Duration = Duration::from_secs(30);

/// A domain id for test number `n` (0..10), unique per process.
fn domain(n: u16) -> u16 {
    assert!(n < 10);
    let base = u16::try_from(std::process::id() % 20).unwrap();
    10 + base * 10 + n // 10..=209, inside ROS' 0..=232
}

fn participant(domain_id: u16) -> Participant {
    let _ = ros2::dds::init_log_bridge();
    Participant::new(ParticipantConfig::localhost(domain_id)).expect("participant")
}

/// What a reader delivers for `sent`: RTPS pads DATA submessages to a
/// multiple of 4 bytes and rustdds neither marks nor strips that padding (see
/// the `ros2::dds` module docs), so up to 3 zero bytes may follow.
fn assert_payload(got: &[u8], sent: &[u8]) {
    let padded = sent.len().div_ceil(4) * 4;
    assert!(
        got.len() == padded
            && got[..sent.len()] == *sent
            && got[sent.len()..].iter().all(|b| *b == 0),
        "payload mismatch: sent {sent:02x?}, got {got:02x?}"
    );
}

fn le(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x00, 0x01, 0x00, 0x00];
    v.extend_from_slice(body);
    v
}

fn be(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x00, 0x00, 0x00, 0x00];
    v.extend_from_slice(body);
    v
}

async fn recv(r: &mut RawReader) -> RawSample {
    timeout(T, r.recv())
        .await
        .unwrap_or_else(|_| panic!("no sample on {r} within {T:?}"))
        .expect("reader closed")
}

/// Best-effort data sent before the reader has matched the writer is lost, so
/// keep sending until one arrives.
async fn send_until_received(w: &RawWriter, r: &mut RawReader, payload: &[u8]) -> RawSample {
    let fut = async {
        loop {
            w.write(payload.to_vec()).expect("write");
            if let Ok(Some(s)) = timeout(Duration::from_millis(200), r.recv()).await {
                return s;
            }
        }
    };
    timeout(T, fut).await.expect("nothing received")
}

#[test]
fn entities_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Participant>();
    send_sync::<RawWriter>();
    send::<RawReader>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_reliable_and_best_effort() {
    let d = domain(0);
    let a = participant(d);
    let b = participant(d);
    assert_ne!(a.guid_prefix(), b.guid_prefix());

    let type_name = "std_msgs::msg::dds_::String_";
    // Reliable: once matched, one write is enough.
    let w = a.writer("rt/rel", type_name, &Qos::ros_default()).unwrap();
    let mut r = b.reader("rt/rel", type_name, &Qos::ros_default()).unwrap();
    assert_eq!(w.to_string(), "rt/rel [std_msgs::msg::dds_::String_]");
    assert_eq!(r.to_string(), "rt/rel [std_msgs::msg::dds_::String_]");
    assert!(
        w.wait_for_readers(1, T).await,
        "reliable reader never matched"
    );
    assert_eq!(w.matched_readers(), 1);
    assert!(
        r.wait_for_writers(1, T).await,
        "reader never matched the writer"
    );
    assert_eq!(r.matched_writers(), 1);
    let payload = le(b"\x06\x00\x00\x00hello\x00");
    let before = SystemTime::now() - Duration::from_secs(1);
    w.write(payload.clone()).unwrap();
    let s = recv(&mut r).await;
    assert_payload(&s.payload, &payload);
    assert_eq!(s.writer_guid, w.guid());
    assert!(a.is_local(&s.writer_guid));
    assert!(!b.is_local(&s.writer_guid));
    let ts = s.source_timestamp.expect("source timestamp");
    assert!(ts >= before && ts <= SystemTime::now() + Duration::from_secs(1));
    // A second one, through write_async.
    let payload2 = le(b"\x06\x00\x00\x00world\x00");
    timeout(T, w.write_async(payload2.clone()))
        .await
        .expect("write hung")
        .unwrap();
    assert_payload(&recv(&mut r).await.payload, &payload2);
    assert!(w.wait_for_acknowledgments(T).await.unwrap());

    // Best effort.
    let w = a.writer("rt/be", type_name, &Qos::sensor_data()).unwrap();
    let mut r = b.reader("rt/be", type_name, &Qos::sensor_data()).unwrap();
    assert!(
        w.wait_for_readers(1, T).await,
        "best-effort reader never matched"
    );
    let payload = le(b"\x03\x00\x00\x00be\x00");
    let s = send_until_received(&w, &mut r, &payload).await;
    assert_payload(&s.payload, &payload);
    assert_eq!(s.writer_guid, w.guid());
    // The writer leaving unmatches the reader.
    drop(w);
    let gone = async {
        while r.matched_writers() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    a.shutdown();
    timeout(T, gone)
        .await
        .expect("reader still matched after the writer's participant left");
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_local_late_joiner_gets_last_sample() {
    let d = domain(1);
    let a = participant(d);
    let w = a
        .writer("rt/latched", "pkg::msg::dds_::T_", &Qos::latched())
        .unwrap();
    w.write(le(&[1, 0, 0, 0])).unwrap();
    w.write(le(&[2, 0, 0, 0])).unwrap();

    // The reader's participant is created only now.
    let b = participant(d);
    let mut r = b
        .reader("rt/latched", "pkg::msg::dds_::T_", &Qos::latched())
        .unwrap();
    // rustdds keeps every sample of a durable writer that no reader has
    // acknowledged yet (not just the KEEP_LAST depth), so older samples may
    // come first; the last one delivered must be the last one written.
    let mut last = recv(&mut r).await;
    while let Ok(Some(s)) = timeout(Duration::from_millis(500), r.recv()).await {
        last = s;
    }
    assert_payload(&last.payload, &le(&[2, 0, 0, 0]));
    assert_eq!(last.writer_guid, w.guid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_is_kept_for_le_and_be() {
    let d = domain(2);
    let a = participant(d);
    let b = participant(d);
    let qos = Qos::ros_default().with_history(History::KeepLast(20));
    let w = a.writer("rt/endian", "pkg::msg::dds_::T_", &qos).unwrap();
    let mut r = b.reader("rt/endian", "pkg::msg::dds_::T_", &qos).unwrap();
    assert!(w.wait_for_readers(1, T).await);
    let payloads = [
        le(&[1, 0, 0, 0]),
        be(&[0, 0, 0, 2]),
        le(&[3, 0, 0, 0]),
        be(&[0, 0, 0, 4, 9]),
    ];
    for p in &payloads {
        w.write(p.clone()).unwrap();
    }
    for p in &payloads {
        let s = recv(&mut r).await;
        assert_payload(&s.payload, p);
        assert_eq!(s.representation().is_little_endian(), p[1] == 1);
    }
    assert_eq!(
        recv_repr(&payloads[1]),
        Representation::CDR_BE,
        "sanity of the helper"
    );
}

fn recv_repr(p: &[u8]) -> Representation {
    Representation([p[0], p[1]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_payload_arrives_intact() {
    let d = domain(3);
    let a = participant(d);
    let b = participant(d);
    let qos = Qos::ros_default();
    let ty = "sensor_msgs::msg::dds_::PointCloud2_";
    let w = a.writer("rt/cloud", ty, &qos).unwrap();
    let mut r = b.reader("rt/cloud", ty, &qos).unwrap();
    assert!(w.wait_for_readers(1, T).await);
    let body: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let payload = le(&body);
    timeout(T, w.write_async(payload.clone()))
        .await
        .expect("write hung")
        .unwrap();
    let s = timeout(Duration::from_secs(60), r.recv())
        .await
        .expect("4 MiB sample not received in 60 s")
        .expect("reader closed");
    assert_eq!(s.payload.len(), payload.len());
    assert!(s.payload[..] == payload[..], "4 MiB payload corrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_reports_remote_writer_and_its_disappearance() {
    let d = domain(4);
    let b = participant(d);
    let mut events = b.discovery_events();
    let a = participant(d);
    let qos = Qos {
        reliability: Reliability::BestEffort,
        durability: Durability::TransientLocal,
        history: History::KeepLast(7),
        deadline: Some(Duration::from_millis(1500)),
        lifespan: None,
    };
    let ty = "geometry_msgs::msg::dds_::Twist_";
    let mut own_events = a.discovery_events();
    let w = a.writer("rt/cmd_vel", ty, &qos).unwrap();
    let guid = w.guid();

    // Our own participant reports the writer flagged as local; DDS built-in
    // (DCPS*) endpoints are never reported.
    let own = timeout(T, async {
        loop {
            match own_events.recv().await.expect("events closed") {
                DiscoveryEvent::WriterAppeared(ep) | DiscoveryEvent::ReaderAppeared(ep) => {
                    assert!(
                        !ep.topic.starts_with("DCPS"),
                        "built-in endpoint reported: {ep:?}"
                    );
                    if ep.guid == guid {
                        return ep;
                    }
                }
                _ => {}
            }
        }
    })
    .await
    .expect("own writer not reported");
    assert!(own.local);
    assert_eq!(own.topic, "rt/cmd_vel");

    let mut saw_participant = false;
    let ep = timeout(T, async {
        loop {
            match events.recv().await.expect("events closed") {
                DiscoveryEvent::ParticipantAppeared { guid_prefix } => {
                    saw_participant |= guid_prefix == a.guid_prefix();
                }
                DiscoveryEvent::WriterAppeared(ep) if ep.guid == guid => return ep,
                _ => {}
            }
        }
    })
    .await
    .expect("remote writer not discovered");
    assert!(
        saw_participant,
        "ParticipantAppeared missing before the writer"
    );
    assert_eq!(ep.topic, "rt/cmd_vel");
    assert_eq!(ep.type_name, ty);
    // HISTORY is not part of DDS discovery data: remote endpoints show the
    // DDS default (keep last 1).
    assert_eq!(
        ep.qos,
        Qos {
            history: History::KeepLast(1),
            ..qos
        }
    );
    assert!(!ep.local);

    // A late subscriber gets the current table.
    let mut late = b.discovery_events();
    let snap = timeout(T, async {
        loop {
            if let DiscoveryEvent::WriterAppeared(ep) = late.recv().await.expect("closed") {
                if ep.guid == guid {
                    return ep;
                }
            }
        }
    })
    .await
    .expect("snapshot lacks the writer");
    assert_eq!(snap, ep);

    drop(w);
    let topic = timeout(T, async {
        loop {
            if let DiscoveryEvent::WriterGone { guid: g, topic } =
                events.recv().await.expect("events closed")
            {
                if g == guid {
                    return topic;
                }
            }
        }
    })
    .await
    .expect("writer disappearance not reported");
    assert_eq!(topic, "rt/cmd_vel");

    // The remote participant leaving is reported too.
    let prefix = a.guid_prefix();
    drop(a);
    timeout(T, async {
        loop {
            if let DiscoveryEvent::ParticipantGone { guid_prefix } =
                events.recv().await.expect("events closed")
            {
                if guid_prefix == prefix {
                    return;
                }
            }
        }
    })
    .await
    .expect("participant disappearance not reported");

    b.shutdown();
    assert!(timeout(T, events.recv())
        .await
        .expect("not closed")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_typed_errors() {
    let a = participant(domain(5));
    let w = a
        .writer("rt/bad", "pkg::msg::dds_::T_", &Qos::ros_default())
        .unwrap();
    match w.write(vec![0x00, 0x01, 0x00]) {
        Err(DdsError::PayloadTooShort { topic, len }) => {
            assert_eq!(topic, "rt/bad");
            assert_eq!(len, 3);
        }
        other => panic!("expected PayloadTooShort, got {other:?}"),
    }
    match w.write(vec![0x00, 0x04, 0x00, 0x00, 1]) {
        Err(
            e @ DdsError::UnsupportedRepresentation {
                id: [0x00, 0x04], ..
            },
        ) => {
            assert!(e.to_string().contains("rt/bad"), "{e}");
        }
        other => panic!("expected UnsupportedRepresentation, got {other:?}"),
    }
    assert!(matches!(
        timeout(T, w.write_async(Vec::new()))
            .await
            .expect("write hung"),
        Err(DdsError::PayloadTooShort { len: 0, .. })
    ));
    // An empty body after the header is fine.
    w.write(le(&[])).unwrap();
    // Bad QoS is rejected, naming the topic.
    let e = a
        .writer(
            "rt/bad_qos",
            "T",
            &Qos::ros_default().with_history(History::KeepLast(0)),
        )
        .unwrap_err();
    assert!(matches!(e, DdsError::InvalidQos { .. }) && e.to_string().contains("rt/bad_qos"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_readers_and_rejects_new_endpoints() {
    let a = participant(domain(6));
    let mut r = a.reader("rt/s", "T", &Qos::ros_default()).unwrap();
    let mut ev = a.discovery_events();
    let a2 = a.clone();
    a.shutdown();
    assert!(a2.is_shut_down());
    assert!(timeout(T, r.recv()).await.expect("recv hung").is_none());
    // Events already queued (our reader's ReaderAppeared) drain, then the
    // channel ends.
    timeout(T, async { while ev.recv().await.is_some() {} })
        .await
        .expect("event channel not closed by shutdown");
    assert!(matches!(
        a2.writer("rt/s", "T", &Qos::ros_default()),
        Err(DdsError::Shutdown { .. })
    ));
    assert!(timeout(T, a2.discovery_events().recv())
        .await
        .expect("recv hung")
        .is_none());
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| m.get(k).cloned()
}

#[test]
fn env_domain_id() {
    let c = ParticipantConfig::from_vars(vars(&[("ROS_DOMAIN_ID", "42")])).unwrap();
    assert_eq!(c.domain_id, 42);
    let c = ParticipantConfig::from_vars(vars(&[("ROS_DOMAIN_ID", " 232 ")])).unwrap();
    assert_eq!(c.domain_id, 232);
    let c = ParticipantConfig::from_vars(vars(&[("ROS_DOMAIN_ID", "")])).unwrap();
    assert_eq!(c.domain_id, 0);
    for bad in ["233", "-1", "abc", "1.5", "70000"] {
        let e = ParticipantConfig::from_vars(vars(&[("ROS_DOMAIN_ID", bad)])).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                DdsError::InvalidEnv {
                    var: "ROS_DOMAIN_ID",
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("ROS_DOMAIN_ID"), "{msg}");
        assert!(msg.contains(bad), "{msg}");
        assert!(msg.contains("0..=232"), "{msg}");
    }
}

#[test]
fn env_discovery_range() {
    for (v, want) in [
        ("OFF", DiscoveryRange::Off),
        ("LOCALHOST", DiscoveryRange::Localhost),
        ("SUBNET", DiscoveryRange::Subnet),
        ("SYSTEM_DEFAULT", DiscoveryRange::SystemDefault),
    ] {
        let c =
            ParticipantConfig::from_vars(vars(&[("ROS_AUTOMATIC_DISCOVERY_RANGE", v)])).unwrap();
        assert_eq!(c.discovery_range, want);
    }
    let e = ParticipantConfig::from_vars(vars(&[("ROS_AUTOMATIC_DISCOVERY_RANGE", "LAN")]))
        .unwrap_err();
    assert!(
        matches!(
            e,
            DdsError::InvalidEnv {
                var: "ROS_AUTOMATIC_DISCOVERY_RANGE",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("LAN"));
    // Unset means the ROS default.
    let c = ParticipantConfig::from_vars(vars(&[])).unwrap();
    assert_eq!(c.discovery_range, DiscoveryRange::Subnet);
    // LOCALHOST implies 127.0.0.1 only.
    let c = ParticipantConfig::from_vars(vars(&[("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")]))
        .unwrap();
    assert_eq!(
        c.effective_networks(),
        Some(vec![std::net::IpAddr::from([127, 0, 0, 1])])
    );
}

#[test]
fn env_localhost_only() {
    let c = ParticipantConfig::from_vars(vars(&[("ROS_LOCALHOST_ONLY", "1")])).unwrap();
    assert_eq!(c.discovery_range, DiscoveryRange::Localhost);
    let c = ParticipantConfig::from_vars(vars(&[("ROS_LOCALHOST_ONLY", "0")])).unwrap();
    assert_eq!(c.discovery_range, DiscoveryRange::Subnet);
    // The newer variable wins.
    let c = ParticipantConfig::from_vars(vars(&[
        ("ROS_LOCALHOST_ONLY", "1"),
        ("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET"),
    ]))
    .unwrap();
    assert_eq!(c.discovery_range, DiscoveryRange::Subnet);
    let e = ParticipantConfig::from_vars(vars(&[("ROS_LOCALHOST_ONLY", "yes")])).unwrap_err();
    assert!(
        matches!(
            e,
            DdsError::InvalidEnv {
                var: "ROS_LOCALHOST_ONLY",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn out_of_range_domain_is_rejected_before_touching_the_network() {
    let e = Participant::new(ParticipantConfig::localhost(233)).unwrap_err();
    assert!(
        matches!(e, DdsError::InvalidDomainId { domain_id: 233 }),
        "{e}"
    );
}

#[test]
fn discovery_range_off_is_refused() {
    let e = Participant::new(ParticipantConfig {
        domain_id: domain(7),
        discovery_range: DiscoveryRange::Off,
        only_networks: None,
    })
    .unwrap_err();
    assert!(matches!(e, DdsError::DiscoveryOff { .. }), "{e}");
    assert!(e.to_string().contains("OFF"), "{e}");
}
