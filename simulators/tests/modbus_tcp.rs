//! The Modbus TCP simulator on a real loopback socket, read and written with tokio-modbus's
//! client; every fault of the issue exercised.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use device_models::Value;
use device_models::protocol::PropertyVisitor;
use device_models::protocol::modbus::RegisterKind;
use simulators::modbus::{ExceptionRule, Faults, Stats, tcp};
use simulators::{Line, modbus_endpoint};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

async fn start() -> tcp::TcpSim {
    let set = common::platform();
    let ep = modbus_endpoint(&set.devices, Line::Tcp, 1).unwrap();
    tcp::spawn("127.0.0.1:0".parse().unwrap(), ep)
        .await
        .unwrap()
}

async fn client(addr: SocketAddr, unit: u8) -> Context {
    tokio_modbus::client::tcp::connect_slave(addr, Slave(unit))
        .await
        .unwrap()
}

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn every_property_decodes_as_its_device_file_says() {
    let sim = start().await;
    let set = common::platform();
    for (id, unit) in [("rig7/wellhead-a07", 1), ("rig7/pump-p201", 2)] {
        let dev = set.devices.iter().find(|d| d.id == id).unwrap();
        let mut ctx = client(sim.addr, unit).await;
        let expected = sim
            .endpoint
            .slave(unit)
            .unwrap()
            .lock()
            .unwrap()
            .values
            .clone();
        for p in &dev.properties {
            let PropertyVisitor::Modbus(v) = &p.visitor else {
                panic!()
            };
            let value = match v.register {
                RegisterKind::Coil => {
                    Value::Bool(ctx.read_coils(v.address, 1).await.unwrap().unwrap()[0])
                }
                RegisterKind::DiscreteInput => Value::Bool(
                    ctx.read_discrete_inputs(v.address, 1)
                        .await
                        .unwrap()
                        .unwrap()[0],
                ),
                RegisterKind::Holding => v
                    .decode_registers(
                        &ctx.read_holding_registers(v.address, v.count())
                            .await
                            .unwrap()
                            .unwrap(),
                    )
                    .unwrap(),
                RegisterKind::Input => v
                    .decode_registers(
                        &ctx.read_input_registers(v.address, v.count())
                            .await
                            .unwrap()
                            .unwrap(),
                    )
                    .unwrap(),
            };
            let want = &expected[&p.name];
            match (value.to_type(p.ty).unwrap(), want) {
                (Value::Float(a), Value::Float(b)) => {
                    assert!((a - b).abs() < 0.11, "{id} {}: {a} vs {b}", p.name)
                }
                (a, b) => assert_eq!(&a, b, "{id} {}", p.name),
            }
        }
    }
    assert!(Stats::get(&sim.endpoint.stats.reads) >= 12);
}

#[tokio::test]
async fn two_unit_ids_behind_one_listener_and_writes_change_behaviour() {
    let sim = start().await;
    let _tick = simulators::AbortOnDrop(simulators::spawn_ticker(
        vec![sim.endpoint.clone()],
        Duration::from_millis(10),
    ));
    let mut ctx = client(sim.addr, 2).await;
    ctx.write_single_coil(0, true).await.unwrap().unwrap();
    ctx.write_single_register(0, 1500).await.unwrap().unwrap();
    // The pump ramps at 300 rpm/s of simulated time towards 1500 rpm.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let speed = ctx.read_input_registers(0, 1).await.unwrap().unwrap()[0];
        if (1450..=1550).contains(&speed) {
            break;
        }
        assert!(Instant::now() < deadline, "speed stuck at {speed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Unit 1 on the same connection is the wellhead: its choke is a holding register.
    ctx.set_slave(Slave(1));
    ctx.write_single_register(0, 725).await.unwrap().unwrap();
    assert_eq!(
        ctx.read_holding_registers(0, 1).await.unwrap().unwrap(),
        [725]
    );
    let v = sim.endpoint.slave(1).unwrap().lock().unwrap().values["choke-position"].clone();
    assert_eq!(v, Value::Float(72.5));
}

#[tokio::test]
async fn exceptions_on_chosen_addresses_and_out_of_map() {
    let sim = start().await;
    sim.endpoint.set_faults(Faults {
        exceptions: vec![ExceptionRule {
            kind: Some(RegisterKind::Input),
            address: 3,
            code: ExceptionCode::ServerDeviceBusy,
        }],
        ..Faults::default()
    });
    let mut ctx = client(sim.addr, 1).await;
    assert_eq!(
        ctx.read_input_registers(2, 2).await.unwrap(),
        Err(ExceptionCode::ServerDeviceBusy)
    );
    assert!(ctx.read_input_registers(0, 2).await.unwrap().is_ok());
    assert_eq!(
        ctx.read_holding_registers(500, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // Writing an input register is not a thing: illegal function is not even possible, but a
    // write to a holding register past the map is an illegal address.
    assert_eq!(
        ctx.write_single_register(9, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(Stats::get(&sim.endpoint.stats.exceptions), 3);
}

#[tokio::test]
async fn delay_jitter_and_dropped_requests() {
    let sim = start().await;
    sim.endpoint.set_faults(Faults {
        delay: Duration::from_millis(150),
        jitter: Duration::from_millis(50),
        ..Faults::default()
    });
    let mut ctx = client(sim.addr, 1).await;
    let t0 = Instant::now();
    ctx.read_input_registers(0, 2).await.unwrap().unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(150));

    sim.endpoint.set_faults(Faults {
        drop_every: Some(2),
        ..Faults::default()
    });
    let before = Stats::get(&sim.endpoint.stats.requests);
    // Request numbers continue from `before`; find which of the next two is dropped.
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let mut ctx = client(sim.addr, 1).await;
        outcomes.push(
            tokio::time::timeout(Duration::from_millis(300), ctx.read_input_registers(0, 2))
                .await
                .is_ok(),
        );
    }
    assert_eq!(
        outcomes.iter().filter(|ok| !**ok).count(),
        1,
        "{outcomes:?} after {before}"
    );
    assert_eq!(Stats::get(&sim.endpoint.stats.dropped), 1);
}

#[tokio::test]
async fn garbage_and_wrong_transaction_id_fail_the_request() {
    let sim = start().await;
    sim.endpoint.set_faults(Faults {
        garbage_every: Some(1),
        ..Faults::default()
    });
    let mut ctx = client(sim.addr, 1).await;
    let r = tokio::time::timeout(T, ctx.read_input_registers(0, 2)).await;
    assert!(!matches!(r, Ok(Ok(Ok(_)))), "garbage was accepted: {r:?}");

    sim.endpoint.set_faults(Faults {
        wrong_id_every: Some(1),
        ..Faults::default()
    });
    let mut ctx = client(sim.addr, 1).await;
    let r = tokio::time::timeout(T, ctx.read_input_registers(0, 2)).await;
    assert!(
        !matches!(r, Ok(Ok(Ok(_)))),
        "wrong transaction id was accepted: {r:?}"
    );

    // Faults off: the simulator itself is unharmed.
    sim.endpoint.set_faults(Faults::default());
    let mut ctx = client(sim.addr, 1).await;
    assert!(ctx.read_input_registers(0, 2).await.unwrap().is_ok());
}

#[tokio::test]
async fn connection_closed_after_n_requests() {
    let sim = start().await;
    sim.endpoint.set_faults(Faults {
        close_after: Some(3),
        ..Faults::default()
    });
    let mut ctx = client(sim.addr, 1).await;
    for _ in 0..3 {
        ctx.read_input_registers(0, 1).await.unwrap().unwrap();
    }
    let r = tokio::time::timeout(T, ctx.read_input_registers(0, 1))
        .await
        .expect("closed, not hung");
    assert!(r.is_err(), "{r:?}");
    let mut again = client(sim.addr, 1).await;
    assert!(again.read_input_registers(0, 1).await.unwrap().is_ok());
    assert_eq!(Stats::get(&sim.endpoint.stats.connections), 2);
}

#[tokio::test]
async fn silence_then_recovery() {
    let sim = start().await;
    sim.endpoint.go_silent(Duration::from_millis(400));
    let mut ctx = client(sim.addr, 1).await;
    let r = tokio::time::timeout(Duration::from_millis(200), ctx.read_input_registers(0, 1)).await;
    assert!(r.is_err(), "answered while silent");
    let back = common::wait_for(Duration::from_secs(5), || {
        sim.endpoint
            .faults()
            .silent_until
            .filter(|t| Instant::now() < *t)
            .is_none()
            .then_some(())
    })
    .await;
    let () = back;
    let mut ctx = client(sim.addr, 1).await;
    assert!(
        tokio::time::timeout(T, ctx.read_input_registers(0, 1))
            .await
            .unwrap()
            .unwrap()
            .is_ok()
    );
}

#[tokio::test]
async fn serves_behind_tokio_modbus_own_server_too() {
    use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
    let set = common::platform();
    let ep = modbus_endpoint(&set.devices, Line::Tcp, 1).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = simulators::modbus::SimService(ep);
    let server = tokio::spawn(async move {
        let new_service = |_| Ok(Some(service.clone()));
        let on_connected = |stream, socket_addr| async move {
            accept_tcp_connection(stream, socket_addr, new_service)
        };
        let _ = Server::new(listener).serve(&on_connected, |_| {}).await;
    });
    let _guard = simulators::AbortOnDrop(server);
    let mut ctx = client(addr, 2).await;
    assert_eq!(ctx.read_coils(0, 1).await.unwrap().unwrap(), [false]);
}
