//! `midge_sub`: subscribe and print what arrives, as `mosquitto_sub`:
//! reconnects when the connection drops, stops after `-C` messages, at the
//! `-W` timeout, after the SUBACK with `-E`, or at the first non-retained
//! message with `--retained-only`; SIGINT and SIGTERM end it cleanly.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::args::{Config, Kind};
use super::client::{Client, ConnectError, Event, Exit, rc};
use super::format;
use super::sign::{Rejected, Verifier};
use crate::codec::{Publish, QoS, SUBACK_FAILURE};
use crate::link::connack_string;
use crate::{sys, topic};

const USAGE: &str = "\
midge_sub is a simple mqtt client that will subscribe to a set of topics and print all messages it receives.
midge_sub is part of midge; it takes the options of mosquitto_sub.

Usage: midge_sub {[-h host] [--unix path] [-p port] [-u username] [-P password] -t topic | -L URL [-t topic]}
                 [-c] [-k keepalive] [-q qos] [-x session-expiry-interval]
                 [-C msg_count] [-E] [-R] [--retained-only] [--remove-retained] [-T filter_out] [-U topic ...]
                 [-F format] [--pretty]
                 [-W timeout_secs]
                 [-A bind_address] [--nodelay]
                 [-i id] [-I id_prefix]
                 [-d] [-N] [--quiet] [-v]
                 [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]
                 [-o options_file]
                 [--verify-key public.pem [--sign-digest sha1|sha256]]
       midge_sub --help

 -A : bind the outgoing socket to this host/ip address. Use to control which interface
      the client communicates over.
 -c : disable clean session/enable persistent client mode
      When this argument is used, the broker will be instructed not to clean existing sessions
      for the same client id when the client connects. Needs -i.
 -C : disconnect and exit after receiving the 'msg_count' messages.
 -d : enable debug messages.
 -D : Define MQTT v5 properties: -D command identifier value, e.g.
      -D publish user-property key value, -D connect session-expiry-interval 60.
 -E : Exit once all subscriptions have been acknowledged by the broker.
 -F : output format (see docs/TOOLS.md): %t topic, %p payload, %q qos, %r retained flag,
      %l payload length, %m message id, %x/%X payload in hex, %I ISO-8601 time,
      %U Unix time with nanoseconds, %j/%J JSON, %% a literal %; MQTT v5: %A topic
      alias, %C content type, %D correlation data, %E message expiry, %F payload format,
      %P user properties, %R response topic, %S subscription identifier; @X strftime's %X,
      @N nanoseconds, @@ a literal @; \\n \\t \\r \\0 \\a \\e \\v \\\\ escapes.
      Flags as printf's: %-10t, %05l, %.3t.
 -h : mqtt host to connect to. Defaults to localhost.
 -i : id to use for this client. Defaults to an id the broker assigns.
 -I : define the client id as id_prefix appended with the process id. Useful for when the
      broker is using the clientid_prefixes option.
 -k : keep alive in seconds for this client. Defaults to 60.
 -L : specify user, password, hostname, port and topic as a URL in the form:
      mqtt://[username[:password]@]host[:port]/topic
 -N : do not add an end of line character when printing the payload.
 -o : read options from this file instead of $XDG_CONFIG_HOME/midge_sub
      (or ~/.config/midge_sub), one option per line.
 -p : network port to connect to. Defaults to 1883.
 -P : provide a password
 -q : quality of service level to use for the subscription. Defaults to 0.
 -R : do not print stale messages (those with retain set).
 -t : mqtt topic to subscribe to. May be repeated multiple times.
 -T : topic string to filter out of results. May be repeated.
 -u : provide a username
 -U : unsubscribe from a topic. May be repeated.
 -v : print published messages verbosely.
 -V : specify the version of the MQTT protocol to use when connecting.
      Can be mqttv5, mqttv311 or mqttv31. Defaults to mqttv311.
 -W : Specifies a timeout in seconds how long to process incoming MQTT messages.
 -x : Set the session-expiry-interval property on the CONNECT packet. Applies to MQTT v5
      clients only. Set to 0-4294967294 to specify the session will expire in that many
      seconds after the client disconnects, or use -1, 4294967295, or ∞ for a session
      that does not expire. Defaults to -1 if -c is also given, or 0 if -c not given.
 --help : display this message.
 --nodelay : disable Nagle's algorithm, to reduce socket sending latency at the possible
             expense of more packets being sent.
 --pretty : print formatted output rather than minimised output when using the
            JSON output format option.
 --quiet : don't print error messages.
 --random-filter : only print a percentage of received messages. Set to 100 to have all
                   messages printed, 50.0 to have half of the messages received on average
                   printed, and so on.
 --retained-only : only handle messages with the retained flag set, and exit when the
                   first non-retained message is received.
 --remove-retained : send a message to the server to clear any received retained messages
                     Use -T to filter out messages you do not want to be cleared.
 --sign-digest : the digest --verify-key checks, sha1 or sha256. Defaults to sha256.
 --unix : connect to a broker through a unix domain socket instead of a TCP socket,
          e.g. /tmp/mosquitto.sock
 --verify-key : print only messages signed with the private key of this ECDSA secp256k1
                public key (PEM, as made by `openssl ec -pubout`), without their
                timestamp and signature; bad signatures and replays (a timestamp not
                newer than the last accepted) are reported on stderr.
 --will-payload : payload for the client Will, which is sent by the broker in case of
                  unexpected disconnection. If not given and will-topic is set, a zero
                  length message will be sent.
 --will-qos : QoS level for the client Will.
 --will-retain : if given, make the client Will retained.
 --will-topic : the topic on which to publish the client Will.
";

/// How long to wait before connecting again, as libmosquitto's default.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub fn main(args: Vec<OsString>) -> ExitCode {
    let cfg = match super::load(Kind::Sub, &args, USAGE) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.no_retain && cfg.retained_only {
        eprintln!("\nError: Combining '-R' and '--retained-only' makes no sense.");
        return ExitCode::from(1);
    }
    let verifier = match &cfg.verify_key {
        Some(path) => match Verifier::load(path, cfg.digest) {
            Ok(v) => Some(v),
            Err(e) => return super::finish(&cfg, Exit::new(1, e)),
        },
        None => None,
    };
    let mut sub = Sub {
        cfg: &cfg,
        verifier,
        received: 0,
        stopping: false,
    };
    match sub.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::finish(&cfg, e),
    }
}

struct Sub<'a> {
    cfg: &'a Config,
    verifier: Option<Verifier>,
    /// Messages handled so far, for `-C`.
    received: u32,
    /// No more messages are handled; the run ends once the broker has
    /// acknowledged the `--remove-retained` clears.
    stopping: bool,
}

impl Sub<'_> {
    fn run(&mut self) -> Result<(), Exit> {
        let deadline = self
            .cfg
            .timeout
            .map(|w| Instant::now() + Duration::from_secs(u64::from(w)));
        let timed_out = || Exit::new(rc::TIMEOUT, "Timed out\n");
        let signals = sys::Signals::install().ok();
        loop {
            let mut client = match Client::connect(self.cfg, deadline) {
                Ok(c) => c,
                Err(ConnectError::Exit(e)) => return Err(e),
                Err(ConnectError::Refused(code)) => {
                    return Err(Exit::new(
                        code,
                        format!("Connection error: {}\n", connack_string(code)),
                    ));
                }
                Err(ConnectError::Deadline) => return Err(timed_out()),
                Err(ConnectError::Lost | ConnectError::Protocol) => {
                    self.pause(deadline)?;
                    continue;
                }
            };
            let mut ok = client.subscribe(&self.cfg.topics, self.cfg.qos).is_ok();
            for u in &self.cfg.unsub_topics {
                ok = ok && client.unsubscribe(u).is_ok();
            }
            let fd = signals.as_ref().map(|s| s.as_raw_fd());
            if !ok {
                self.pause(deadline)?;
                continue;
            }
            // Until the connection drops.
            while let Ok(event) = client.next(fd, deadline) {
                match event {
                    Event::Deadline => {
                        client.disconnect();
                        return Err(timed_out());
                    }
                    Event::Input => {
                        if signals.as_ref().and_then(|s| s.next()).is_some() {
                            client.disconnect();
                            return Ok(());
                        }
                        continue;
                    }
                    Event::SubAck(s) => {
                        if self.subscribed(&s.pkid, &s.codes) {
                            client.disconnect();
                            return Ok(());
                        }
                    }
                    Event::UnsubAck(_) | Event::Acked(_) => {}
                    Event::Message(m) => self.message(&mut client, m),
                }
                if self.stopping && client.inflight() == 0 {
                    client.disconnect();
                    return Ok(());
                }
            }
            if self.stopping {
                return Ok(());
            }
            // The connection dropped: connect again, as mosquitto_sub does.
            self.pause(deadline)?;
        }
    }

    /// Waits before reconnecting; the `-W` deadline still ends the run.
    fn pause(&self, deadline: Option<Instant>) -> Result<(), Exit> {
        let until = Instant::now() + RECONNECT_DELAY;
        if let Some(d) = deadline {
            if d <= until {
                std::thread::sleep(d.saturating_duration_since(Instant::now()));
                return Err(Exit::new(rc::TIMEOUT, "Timed out\n"));
            }
        }
        std::thread::sleep(RECONNECT_DELAY);
        Ok(())
    }

    /// The SUBACK: `-d`'s line, the refusal line; true when the run ends.
    fn subscribed(&self, mid: &u16, codes: &[u8]) -> bool {
        if self.cfg.debug && !self.cfg.quiet {
            let list: Vec<String> = codes.iter().map(u8::to_string).collect();
            println!("Subscribed (mid: {mid}): {}", list.join(", "));
        }
        let denied = codes.iter().all(|&c| c == SUBACK_FAILURE);
        if denied && !self.cfg.quiet {
            eprintln!("All subscription requests were denied.");
        }
        denied || self.cfg.exit_after_sub
    }

    /// One message, as mosquitto_sub's message callback handles it.
    fn message(&mut self, client: &mut Client, mut m: Publish) {
        let cfg = self.cfg;
        if self.stopping {
            return;
        }
        if cfg.retained_only && !m.retain {
            self.stopping = true;
            return;
        }
        if m.retain && cfg.no_retain {
            return;
        }
        if cfg.filter_outs.iter().any(|f| topic::matches(f, &m.topic)) {
            return;
        }
        if cfg.remove_retained && m.retain {
            let _ = client.publish(&m.topic, b"", QoS::AtLeastOnce, true);
        }
        if let Some(v) = &mut self.verifier {
            match v.check(&m.payload) {
                Ok(clear) => m.payload = clear.into(),
                Err(r) => {
                    if !cfg.quiet {
                        match r {
                            Rejected::BadSignature => eprintln!(
                                "Warning: bad signature on a message to '{}', not printed.",
                                m.topic
                            ),
                            Rejected::Replay { timestamp, last } => eprintln!(
                                "Warning: replayed message to '{}' (timestamp {timestamp} is not newer than {last}), not printed.",
                                m.topic
                            ),
                        }
                    }
                    return;
                }
            }
        }
        if self.chosen() {
            let mut out = Vec::new();
            let mut errors = Vec::new();
            format::message(cfg, &m, &mut out, &mut errors);
            for e in errors {
                if !cfg.quiet {
                    eprint!("{e}");
                }
            }
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // The reader went away (a closed pipe): nothing left to do.
                self.stopping = true;
                return;
            }
        }
        if cfg.msg_count > 0 {
            self.received += 1;
            if self.received >= cfg.msg_count {
                self.stopping = true;
            }
        }
    }

    /// `--random-filter`: whether this message is among the share printed.
    fn chosen(&self) -> bool {
        if self.cfg.random_filter >= 10_000 {
            return true;
        }
        let mut b = [0u8; 4];
        if sys::random_bytes(&mut b).is_err() {
            return true;
        }
        u32::from_ne_bytes(b) % 10_000 < self.cfg.random_filter
    }
}
