//! Shared test support: a private RabbitMQ vhost per test, deleted on drop.
//!
//! An unreachable broker or a missing `rabbitmqctl` fails the tests (never skips).

use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use iom::config::Secret;
use iom::queue::BrokerConfig;
use iom::task::PlateOutput;

pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run rabbitmqctl {args:?}: {e}; the queue tests need RabbitMQ on 127.0.0.1:5672 and rabbitmqctl (run as root)")
        });
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private vhost, deleted on drop (also when the test panics).
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub fn new() -> Vhost {
        static FLAG: Once = Once::new();
        // At-least-once dead-lettering needs this flag on 3.10 (idempotent).
        FLAG.call_once(|| {
            rabbitmqctl(&["enable_feature_flag", "stream_queue"]);
        });
        let name = format!("iom-test-{:016x}", fastrand::u64(..));
        rabbitmqctl(&["add_vhost", &name]);
        let v = Vhost { name };
        rabbitmqctl(&["set_permissions", "-p", &v.name, "guest", ".*", ".*", ".*"]);
        v
    }

    pub fn url(&self) -> String {
        format!("amqp://guest@127.0.0.1:5672/{}", self.name)
    }

    pub fn config(&self) -> BrokerConfig {
        BrokerConfig {
            url: self.url(),
            password: Some(Secret::new("guest".into())),
            prefix: "t".into(),
            confirm_timeout: Duration::from_secs(5),
            delivery_limit: 3,
            retry_tiers: vec![Duration::from_secs(1), Duration::from_secs(3)],
        }
    }

    /// A plain lapin connection, for setting up broken topologies.
    pub async fn raw(&self) -> lapin::Connection {
        lapin::Connection::connect(
            &format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name),
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("raw lapin connection")
    }

    /// Closes every connection of this vhost from the broker side. (`rabbitmqctl
    /// list_connections` lists the connections of every vhost, whatever `-p` says:
    /// filter on the vhost column so parallel tests are left alone.)
    pub async fn close_connections(&self) -> usize {
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let list = rabbitmqctl(&["list_connections", "pid", "vhost"]);
            let pids: Vec<String> = list
                .lines()
                .filter_map(|l| {
                    let (pid, vhost) = l.trim().split_once(char::is_whitespace)?;
                    (pid.starts_with('<') && vhost.trim() == name).then(|| pid.to_string())
                })
                .collect();
            for pid in &pids {
                rabbitmqctl(&["close_connection", pid, "iom test: broker-side close"]);
            }
            pids.len()
        })
        .await
        .unwrap()
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.name])
            .output();
    }
}

/// A plate output under `/show/p` (no file is written there).
pub fn output() -> PlateOutput {
    PlateOutput {
        frames_dir: "/show/p/seq/A/A_0010/plate/org/v001".into(),
        plate_name: "A_0010_org_v001".into(),
        ext: "exr".into(),
        first_frame: 1001,
        pad: 4,
        plate_dir: "/show/p/seq/A/A_0010/plate".into(),
        jpg_dir: "/show/p/seq/A/A_0010/plate/org/v001_jpg".into(),
        jpg_2k_dir: "/show/p/seq/A/A_0010/plate/org/v001_jpg_2k".into(),
    }
}
