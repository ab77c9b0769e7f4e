//! The Modbus mapper against the simulators, in-process on port 0 and on a pty: readings,
//! writes with read-back, one shared connection per endpoint, every simulator fault, the RTU
//! arbiter.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use std::time::Duration;

use common::{Running, at_port, at_tcp, device, options, platform, start};
use device_models::Value;
use device_models::protocol::modbus::RegisterKind;
use mappers::modbus::link::LinkOptions;
use mappers::modbus::{Links, ModbusMapper};
use mappers::{Health, Mapper, Metrics, WriteOutcome};
use simulators::modbus::{ExceptionRule, Faults, Stats, tcp};
use simulators::{AbortOnDrop, Line, modbus_endpoint};
use tokio_modbus::ExceptionCode;

const T: Duration = Duration::from_secs(10);

async fn tcp_sim() -> tcp::TcpSim {
    let ep = modbus_endpoint(&platform().devices, Line::Tcp, 1).unwrap();
    tcp::spawn("127.0.0.1:0".parse().unwrap(), ep)
        .await
        .unwrap()
}

fn mapper(id: &str, sim: &tcp::TcpSim, links: &Links) -> Running {
    let cfg = at_tcp(device(&platform(), id), sim.addr);
    start(Mapper::build(&cfg, links, &options()).unwrap())
}

fn fast_links() -> Links {
    Links::new(LinkOptions {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        degraded_for: Duration::from_millis(300),
    })
}

#[tokio::test]
async fn reads_every_property_and_shares_one_connection() {
    let sim = tcp_sim().await;
    let links = fast_links();
    let mut wellhead = mapper("rig7/wellhead-a07", &sim, &links);
    let mut pump = mapper("rig7/pump-p201", &sim, &links);
    wellhead.health(Health::Online, T).await;
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 6 {
        for r in wellhead.readings(T).await {
            seen.insert(r.property.to_string(), r.value);
        }
    }
    let truth = sim
        .endpoint
        .slave(1)
        .unwrap()
        .lock()
        .unwrap()
        .values
        .clone();
    let Value::Float(p) = seen["tubing-pressure"] else {
        panic!("{seen:?}")
    };
    assert!(
        (p - truth["tubing-pressure"].as_f64().unwrap()).abs() < 5.0,
        "{p}"
    );
    assert_eq!(seen["esd-active"], Value::Bool(false));
    assert_eq!(seen["choke-position"], Value::Float(30.0));
    assert!(matches!(seen["run-hours"], Value::Int(12873)), "{seen:?}");
    let r = pump.readings(T).await;
    assert!(
        r.iter()
            .any(|r| &*r.property == "drive-status" || &*r.property == "speed"),
        "{r:?}"
    );
    // Both devices, one TCP connection.
    assert_eq!(Stats::get(&sim.endpoint.stats.connections), 1);
}

#[tokio::test]
async fn plan_needs_fewer_requests_than_properties() {
    let set = platform();
    let links = Links::default();
    for (id, props, max_requests) in [
        ("rig7/wellhead-a07", 6, 4),
        ("rig7/pump-p201", 6, 4),
        ("rig7/tanks-north", 7, 4),
    ] {
        let Mapper::Modbus(m) = Mapper::build(&device(&set, id), &links, &options()).unwrap()
        else {
            panic!()
        };
        assert!(
            m.requests_per_cycle() <= max_requests,
            "{id}: {}",
            m.requests_per_cycle()
        );
        assert!(m.requests_per_cycle() < props, "{id}");
    }
    let _ = ModbusMapper::build(&device(&set, "rig7/pump-p201"), &links).unwrap();
}

#[tokio::test]
async fn writes_apply_and_read_back() {
    let sim = tcp_sim().await;
    let links = fast_links();
    let mut pump = mapper("rig7/pump-p201", &sim, &links);
    let mut wellhead = mapper("rig7/wellhead-a07", &sim, &links);
    assert_eq!(
        pump.write(1, "speed-setpoint", Value::Int(1500), T).await,
        WriteOutcome::Done {
            read_back: Some(Value::Int(1500))
        }
    );
    assert_eq!(
        pump.write(2, "pump-run", Value::Bool(true), T).await,
        WriteOutcome::Done {
            read_back: Some(Value::Bool(true))
        }
    );
    assert_eq!(
        wellhead
            .write(3, "choke-position", Value::Float(72.5), T)
            .await,
        WriteOutcome::Done {
            read_back: Some(Value::Float(72.5))
        }
    );
    assert!(matches!(
        wellhead
            .write(4, "tubing-pressure", Value::Float(1.0), T)
            .await,
        WriteOutcome::ReadOnly(_)
    ));
    assert!(matches!(
        wellhead
            .write(5, "choke-position", Value::Float(99999.0), T)
            .await,
        WriteOutcome::Invalid(_)
    ));
    assert!(matches!(
        wellhead.write(6, "no-such", Value::Int(1), T).await,
        WriteOutcome::Invalid(_)
    ));
    // The device says no: a refusal, not a link failure.
    sim.endpoint.set_faults(Faults {
        exceptions: vec![ExceptionRule {
            kind: Some(RegisterKind::Holding),
            address: 0,
            code: ExceptionCode::IllegalDataValue,
        }],
        ..Faults::default()
    });
    assert!(matches!(
        pump.write(7, "speed-setpoint", Value::Int(100), T).await,
        WriteOutcome::Refused(_)
    ));
    assert_eq!(
        sim.endpoint.slave(1).unwrap().lock().unwrap().values["choke-position"],
        Value::Float(72.5)
    );
}

#[tokio::test]
async fn exceptions_make_a_device_unhealthy_and_others_keep_running() {
    let sim = tcp_sim().await;
    let links = fast_links();
    let mut wellhead = mapper("rig7/wellhead-a07", &sim, &links);
    wellhead.health(Health::Online, T).await;
    sim.endpoint.set_faults(Faults {
        exceptions: vec![ExceptionRule {
            kind: Some(RegisterKind::Input),
            address: 0,
            code: ExceptionCode::ServerDeviceFailure,
        }],
        ..Faults::default()
    });
    wellhead.health(Health::Unhealthy, T).await;
    assert!(Metrics::get(&wellhead.metrics.errors_exception) > 0);
    // The fault is on the shared endpoint, so the pump's input registers fail too; its coil and
    // holding registers still deliver, and the wellhead's trouble does not stop its mapper.
    let mut pump = mapper("rig7/pump-p201", &sim, &links);
    let r = pump.readings(T).await;
    assert!(!r.is_empty());
    sim.endpoint.set_faults(Faults::default());
    wellhead.health(Health::Online, T).await;
}

#[tokio::test]
async fn a_device_that_refuses_holes_is_replanned() {
    let sim = tcp_sim().await;
    // The pump's input register 1 is unused (speed at 0, vibration at 2..=3); this PLC refuses
    // reads that touch it.
    sim.endpoint.set_faults(Faults {
        exceptions: vec![ExceptionRule {
            kind: Some(RegisterKind::Input),
            address: 1,
            code: ExceptionCode::IllegalDataAddress,
        }],
        ..Faults::default()
    });
    let links = fast_links();
    let mut pump = mapper("rig7/pump-p201", &sim, &links);
    pump.health(Health::Unhealthy, T).await;
    // After the first refusal the merged read is split; every property arrives again.
    pump.health(Health::Online, T).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 6 {
        for r in pump.readings(T).await {
            seen.insert(r.property.to_string());
        }
    }
}

#[tokio::test]
async fn no_reply_means_offline_then_recovery() {
    let sim = tcp_sim().await;
    let links = fast_links();
    let mut wellhead = mapper("rig7/wellhead-a07", &sim, &links);
    wellhead.health(Health::Online, T).await;
    sim.endpoint.go_silent(Duration::from_secs(3));
    wellhead.health(Health::Offline, T).await;
    assert!(Metrics::get(&wellhead.metrics.errors_timeout) > 0);
    wellhead.health(Health::Online, T).await;
}

#[tokio::test]
async fn delay_under_the_timeout_is_fine_garbage_is_not() {
    let sim = tcp_sim().await;
    let links = fast_links();
    sim.endpoint.set_faults(Faults {
        delay: Duration::from_millis(50),
        jitter: Duration::from_millis(20),
        ..Faults::default()
    });
    let mut wellhead = mapper("rig7/wellhead-a07", &sim, &links);
    wellhead.health(Health::Online, T).await;
    assert!(!wellhead.readings(T).await.is_empty());
    sim.endpoint.set_faults(Faults {
        garbage_every: Some(2),
        ..Faults::default()
    });
    wellhead.health(Health::Unhealthy, T).await;
    sim.endpoint.set_faults(Faults {
        wrong_id_every: Some(2),
        ..Faults::default()
    });
    let before = Metrics::get(&wellhead.metrics.errors_decode);
    let deadline = std::time::Instant::now() + T;
    while Metrics::get(&wellhead.metrics.errors_decode) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "wrong transaction ids not noticed"
        );
        let _ = wellhead.next(T).await;
    }
    sim.endpoint.set_faults(Faults::default());
    wellhead.health(Health::Online, T).await;
    // Each protocol error reset the connection, and the mapper reconnected.
    assert!(Stats::get(&sim.endpoint.stats.connections) > 1);
}

#[tokio::test]
async fn dropped_connections_and_dropped_requests_are_survived() {
    let sim = tcp_sim().await;
    let links = fast_links();
    sim.endpoint.set_faults(Faults {
        close_after: Some(5),
        drop_every: Some(7),
        ..Faults::default()
    });
    let mut pump = mapper("rig7/pump-p201", &sim, &links);
    let mut got = 0;
    while got < 20 {
        if let mappers::Event::Readings(r) = pump.next(T).await {
            got += r.len();
        }
    }
    assert!(Stats::get(&sim.endpoint.stats.connections) >= 2);
}

#[tokio::test]
async fn unreachable_endpoint_is_offline_without_blocking() {
    // A port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let links = fast_links();
    let cfg = at_tcp(device(&platform(), "rig7/wellhead-a07"), addr);
    let mut m = start(Mapper::build(&cfg, &links, &options()).unwrap());
    m.health(Health::Offline, T).await;
    assert!(matches!(
        m.write(1, "choke-position", Value::Float(10.0), T).await,
        WriteOutcome::LinkFailed(_)
    ));
    assert!(Metrics::get(&m.metrics.errors_link) > 0);
}

#[tokio::test]
async fn rtu_arbiter_skips_a_silent_slave() {
    let set = platform();
    let ep = modbus_endpoint(&set.devices, Line::Rtu, 1).unwrap();
    let pty = simulators::pty::Pty::open().unwrap();
    let path = pty.path().to_string_lossy().into_owned();
    let timing = Some(simulators::modbus::rtu::LineTiming {
        baud: 19200,
        bits_per_char: 11,
    });
    let ep2 = ep.clone();
    let _line = AbortOnDrop(tokio::spawn(async move {
        let _ = simulators::modbus::rtu::serve(pty, ep2, timing).await;
    }));
    let links = Links::new(LinkOptions {
        degraded_for: Duration::from_secs(2),
        ..LinkOptions::default()
    });
    let north = at_port(device(&set, "rig7/tanks-north"), &path);
    // A third slave on the line that is not there (unit 9).
    let mut ghost = north.clone();
    ghost.id = "rig7/tanks-ghost".into();
    if let device_models::protocol::DeviceProtocol::Modbus(m) = &mut ghost.protocol {
        m.slave_id = 9;
    }
    let mut n = start(Mapper::build(&north, &links, &options()).unwrap());
    let mut g = start(Mapper::build(&ghost, &links, &options()).unwrap());
    let mut s = start(
        Mapper::build(
            &at_port(device(&set, "rig7/tanks-south"), &path),
            &links,
            &options(),
        )
        .unwrap(),
    );
    g.health(Health::Offline, T).await;
    // The real slaves keep delivering while the ghost is skipped.
    let mut count = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < deadline {
        tokio::select! {
            e = n.events.recv() => if let Some(mappers::Event::Readings(r)) = e { count += r.len() },
            e = s.events.recv() => if let Some(mappers::Event::Readings(r)) = e { count += r.len() },
            e = g.events.recv() => { let _ = e; }
        }
    }
    assert!(count > 20, "only {count} readings from the live slaves");
    // About 6 s with a 300 ms timeout and a 2 s (doubling) skip: a few timeouts, not one per poll.
    let timeouts = Metrics::get(&g.metrics.errors_timeout);
    assert!((1..=4).contains(&timeouts), "{timeouts} timeouts");
    assert!(
        Metrics::get(&g.metrics.errors_link) > 0,
        "skipped polls are counted"
    );
    let link = links.handle(&format!("rtu://{path}")).unwrap();
    assert!(link.utilisation() > 0.0);
}

/// Writes jump the poll queue: with a dozen polls waiting on a 9600-baud line, a write is done
/// after at most the poll on the wire, not after all of them.
#[tokio::test]
async fn rtu_writes_jump_the_poll_queue() {
    use mappers::modbus::link::{Data, Op};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let set = platform();
    let ep = modbus_endpoint(&set.devices, Line::Rtu, 1).unwrap();
    let pty = simulators::pty::Pty::open().unwrap();
    let path = pty.path().to_string_lossy().into_owned();
    let timing = Some(simulators::modbus::rtu::LineTiming {
        baud: 9600,
        bits_per_char: 11,
    });
    let ep2 = ep.clone();
    let _line = AbortOnDrop(tokio::spawn(async move {
        let _ = simulators::modbus::rtu::serve(pty, ep2, timing).await;
    }));
    let links = Links::new(LinkOptions::default());
    let north = at_port(device(&set, "rig7/tanks-north"), &path);
    let device_models::protocol::DeviceProtocol::Modbus(m) = &north.protocol else {
        panic!("tanks-north is a Modbus device");
    };
    let (unit, link) = (m.slave_id, links.get(&m.transport));
    const POLLS: usize = 12;
    let done = Arc::new(AtomicUsize::new(0));
    let mut polls = Vec::new();
    for _ in 0..POLLS {
        let (link, done) = (link.clone(), done.clone());
        polls.push(tokio::spawn(async move {
            let op = Op::Read {
                kind: RegisterKind::Input,
                start: 0,
                count: 5,
            };
            let r = link.call(unit, op, Duration::from_secs(2), false).await;
            done.fetch_add(1, Ordering::SeqCst);
            r
        }));
    }
    // Every poll is queued or on the wire before the write comes.
    let deadline = std::time::Instant::now() + T;
    while link.queued_reads() < POLLS - 1 {
        assert!(std::time::Instant::now() < deadline, "polls never queued");
        tokio::task::yield_now().await;
    }
    let w = link
        .call(
            unit,
            Op::WriteRegister(0, 4321),
            Duration::from_secs(2),
            true,
        )
        .await;
    let polls_before_write = done.load(Ordering::SeqCst);
    assert!(matches!(w, Ok(Ok(Data::Written))), "{w:?}");
    assert!(
        polls_before_write <= 1,
        "{polls_before_write} of {POLLS} queued polls went before the write"
    );
    for p in polls {
        let r = p.await.unwrap();
        assert!(matches!(r, Ok(Ok(Data::Words(_)))), "{r:?}");
    }
    assert_eq!(done.load(Ordering::SeqCst), POLLS);
}
