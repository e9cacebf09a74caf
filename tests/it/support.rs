//! Shared test support: a private RabbitMQ vhost per test, deleted on drop.
//!
//! An unreachable broker or a missing `rabbitmqctl` fails the tests (never skips).

use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use iom::config::Secret;
use iom::queue::BrokerConfig;
use iom::task::{PlateOutput, PublishInfo};

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

/// What a test graph publishes: shot `A_0010` of project `p`, `org` v001, 8×8.
pub fn publish_info() -> PublishInfo {
    PublishInfo {
        project: "p".into(),
        seq: "A".into(),
        shot: "A_0010".into(),
        seq_type: "org".into(),
        version: 1,
        scan_name: "plate.".into(),
        clip_name: String::new(),
        colorspace: "linear".into(),
        fps: Some(24.0),
        resolution: "8 x 8".into(),
        timecode_in: String::new(),
        timecode_out: String::new(),
        just_in: 1,
        just_out: 2,
        retimes: vec![],
    }
}

/// A RabbitMQ node of the test's own, on free ports, for faults the shared broker
/// must not suffer: a full restart, a short consumer timeout. Stopped and deleted
/// on drop. Runs the node scripts directly (not Debian's wrappers, which switch to
/// the `rabbitmq` user), with its own home (Erlang cookie), data, logs, config and
/// an empty plugin list (so it opens no management port).
pub struct OwnNode {
    pub name: String,
    pub port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
}

impl OwnNode {
    /// Starts a node with `conf` appended to its `rabbitmq.conf`.
    pub fn start(conf: &str) -> OwnNode {
        let dir = tempfile::tempdir().unwrap();
        let (port, dist_port) = (free_port(), free_port());
        let name = format!("iomtest{:08x}@localhost", fastrand::u32(..));
        std::fs::create_dir_all(dir.path().join("mnesia")).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.default = {port}\nloopback_users = none\n{conf}\n"),
        )
        .unwrap();
        let node = OwnNode {
            name,
            port,
            dist_port,
            dir,
        };
        node.boot();
        node
    }

    fn env(&self, c: &mut Command) {
        let d = self.dir.path();
        c.env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .current_dir(d);
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        self.env(&mut c);
        c.arg("-n").arg(&self.name).args(args);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run rabbitmqctl {args:?}: {e}"))
    }

    /// Starts the node and waits until it accepts AMQP connections (at most 2 min).
    pub fn boot(&self) {
        let mut c = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        self.env(&mut c);
        let out = c.arg("-detached").output().unwrap_or_else(|e| {
            panic!("cannot start a RabbitMQ node of the test's own: {e}; install rabbitmq-server (deploy/install-deps.sh)")
        });
        assert!(
            out.status.success(),
            "rabbitmq-server -detached failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t0 = std::time::Instant::now();
        loop {
            let up = self.ctl(&["-q", "status"]).status.success()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if up {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "own RabbitMQ node {} did not come up; logs in {}",
                self.name,
                self.dir.path().join("log").display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let out = self.ctl(&["-q", "enable_feature_flag", "all"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the node (a clean shutdown: what a broker restart does).
    pub fn stop(&self) {
        let out = self.ctl(&["-q", "stop"]);
        assert!(
            out.status.success(),
            "rabbitmqctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The AMQP URL of the default vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = self.ctl(&["-q", "stop"]);
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
