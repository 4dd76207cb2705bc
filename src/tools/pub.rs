//! `midge_pub`: publish one message (`-m -f -s -n`, `--repeat`) or one per
//! line of standard input as the lines arrive (`-l`), as `mosquitto_pub`.

use std::ffi::OsString;
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::args::{Config, Kind, PubMode};
use super::client::{Broken, Client, ConnectError, Event, Exit, rc};
use super::sign::Signer;
use crate::link::connack_string;

const USAGE: &str = "\
midge_pub is a simple mqtt client that will publish a message on a single topic and exit.
midge_pub is part of midge; it takes the options of mosquitto_pub.

Usage: midge_pub {[-h host] [--unix path] [-p port] [-u username] [-P password] -t topic | -L URL}
                 {-f file | -l | -n | -m message}
                 [-c] [-k keepalive] [-q qos] [-r] [--repeat N] [--repeat-delay time] [-x session-expiry]
                 [-A bind_address] [--nodelay]
                 [-i id] [-I id_prefix]
                 [-d] [--quiet]
                 [-M max_inflight]
                 [-u username [-P password]]
                 [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]
                 [-o options_file]
                 [--sign-key private.pem [--sign-digest sha1|sha256]]
       midge_pub --help

 -A : bind the outgoing socket to this host/ip address. Use to control which interface
      the client communicates over.
 -d : enable debug messages.
 -D : Define MQTT v5 properties: -D command identifier value, e.g.
      -D publish user-property key value, -D connect session-expiry-interval 60.
 -c : disable clean session/enable persistent client mode
      When this argument is used, the broker will be instructed not to clean existing sessions
      for the same client id when the client connects. Needs -i.
 -f : send the contents of a file as the message.
 -h : mqtt host to connect to. Defaults to localhost.
 -i : id to use for this client. Defaults to an id the broker assigns.
 -I : define the client id as id_prefix appended with the process id. Useful for when the
      broker is using the clientid_prefixes option.
 -k : keep alive in seconds for this client. Defaults to 60.
 -L : specify user, password, hostname, port and topic as a URL in the form:
      mqtt://[username[:password]@]host[:port]/topic
 -l : read messages from stdin, sending a separate message for each line, as each
      line arrives (works at the end of `tail -f`).
 -m : message payload to send.
 -M : the maximum inflight messages for QoS 1/2.
 -n : send a null (zero length) message.
 -o : read options from this file instead of $XDG_CONFIG_HOME/midge_pub
      (or ~/.config/midge_pub), one option per line.
 -p : network port to connect to. Defaults to 1883.
 -P : provide a password
 -q : quality of service level to use for all messages. Defaults to 0.
 -r : message should be retained.
 -s : read message from stdin, sending the entire input as a message.
 -t : mqtt topic to publish to.
 -u : provide a username
 -V : specify the version of the MQTT protocol to use when connecting.
      Can be mqttv5, mqttv311 or mqttv31. Defaults to mqttv311.
 -x : Set the session-expiry-interval property on the CONNECT packet. Applies to MQTT v5
      clients only. Set to 0-4294967294 to specify the session will expire in that many
      seconds after the client disconnects, or use -1, 4294967295, or ∞ for a session
      that does not expire. Defaults to -1 if -c is also given, or 0 if -c not given.
 --help : display this message.
 --nodelay : disable Nagle's algorithm, to reduce socket sending latency at the possible
             expense of more packets being sent.
 --quiet : don't print error messages.
 --repeat : if publish mode is -f, -m, or -s, then repeat the publish N times.
 --repeat-delay : if using --repeat, wait time seconds between publishes. Defaults to 0.
 --sign-key : sign every message with this ECDSA secp256k1 private key (PEM, as made by
              `openssl ecparam -genkey -name secp256k1 -noout`): the payload sent is
              the 10-digit Unix time, the message, ':' and the base64 signature.
 --sign-digest : the digest signed, sha1 or sha256. Defaults to sha256.
 --unix : connect to a broker through a unix domain socket instead of a TCP socket,
          e.g. /tmp/mosquitto.sock
 --will-payload : payload for the client Will, which is sent by the broker in case of
                  unexpected disconnection. If not given and will-topic is set, a zero
                  length message will be sent.
 --will-qos : QoS level for the client Will.
 --will-retain : if given, make the client Will retained.
 --will-topic : the topic on which to publish the client Will.
";

pub fn main(args: Vec<OsString>) -> ExitCode {
    let cfg = match super::load(Kind::Pub, &args, USAGE) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (Some(topic), false) = (cfg.topic.clone(), cfg.mode == PubMode::None) else {
        print!("{USAGE}");
        eprintln!("Error: Both topic and message must be supplied.");
        return ExitCode::from(1);
    };
    match run(&cfg, &topic) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::finish(&cfg, e),
    }
}

fn run(cfg: &Config, topic: &str) -> Result<(), Exit> {
    let signer = match &cfg.sign_key {
        Some(path) => Some(Signer::load(path, cfg.digest).map_err(|e| Exit::new(1, e))?),
        None => None,
    };
    let message = load_message(cfg)?;
    let mut c = connect(cfg)?;
    let mut session = Publisher {
        cfg,
        topic,
        signer,
        client: &mut c,
    };
    match message {
        Some(m) => session.repeat(&m)?,
        None => session.lines()?,
    }
    session.drain()?;
    c.disconnect();
    Ok(())
}

/// The message of `-m`, `-n`, `-f` or `-s`; None for `-l`.
pub(super) fn load_message(cfg: &Config) -> Result<Option<Vec<u8>>, Exit> {
    Ok(match &cfg.mode {
        PubMode::Message(m) => Some(m.clone()),
        PubMode::Null => Some(Vec::new()),
        PubMode::File(path) => match std::fs::read(path) {
            Ok(m) => Some(m),
            Err(_) => {
                let p = path.display();
                return Err(Exit::new(
                    1,
                    format!(
                        "Error: Unable to open file \"{p}\".\nError loading input file \"{p}\".\n"
                    ),
                ));
            }
        },
        PubMode::StdinFile => {
            let mut m = Vec::new();
            if std::io::stdin().lock().read_to_end(&mut m).is_err() {
                return Err(Exit::new(1, "Error loading input from stdin.\n"));
            }
            Some(m)
        }
        PubMode::StdinLine | PubMode::None => None,
    })
}

/// Connects, turning a failure into `mosquitto_pub`'s lines and codes.
fn connect(cfg: &Config) -> Result<Client, Exit> {
    Client::connect(cfg, None).map_err(|e| match e {
        ConnectError::Exit(e) => e,
        ConnectError::Refused(code) => Exit::new(
            rc::CONN_REFUSED,
            format!(
                "Connection error: {}\nError: The connection was refused.\n",
                connack_string(code)
            ),
        ),
        ConnectError::Lost | ConnectError::Deadline => lost(),
        ConnectError::Protocol => protocol(),
    })
}

fn lost() -> Exit {
    Exit::new(rc::CONN_LOST, "Error: The connection was lost.\n")
}

fn protocol() -> Exit {
    Exit::new(
        rc::PROTOCOL,
        "Error: A network protocol error occurred when communicating with the broker.\n",
    )
}

fn broken(b: Broken) -> Exit {
    match b {
        Broken::Lost => lost(),
        Broken::Protocol(_) => protocol(),
    }
}

struct Publisher<'a> {
    cfg: &'a Config,
    topic: &'a str,
    signer: Option<Signer>,
    client: &'a mut Client,
}

impl Publisher<'_> {
    fn publish(&mut self, message: &[u8]) -> Result<(), Exit> {
        let signed;
        let payload = match &self.signer {
            Some(s) => {
                signed = s.sign(message);
                &signed[..]
            }
            None => message,
        };
        self.client
            .publish(self.topic, payload, self.cfg.qos, self.cfg.retain)
            .map_err(broken)?;
        Ok(())
    }

    /// Serves the connection until at most `max` messages are in flight.
    fn wait_inflight(&mut self, max: usize) -> Result<(), Exit> {
        while self.client.inflight() > max {
            self.client.next(None, None).map_err(broken)?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), Exit> {
        self.wait_inflight(0)
    }

    /// `-m`, `-f`, `-s`, `-n`: the message `--repeat` times, each after the
    /// previous is acknowledged and `--repeat-delay` has passed.
    fn repeat(&mut self, message: &[u8]) -> Result<(), Exit> {
        for i in 0..self.cfg.repeat_count {
            if i > 0 && self.cfg.repeat_delay > Duration::ZERO {
                let until = Instant::now() + self.cfg.repeat_delay;
                while Instant::now() < until {
                    match self.client.next(None, Some(until)).map_err(broken)? {
                        Event::Deadline => break,
                        _ => continue,
                    }
                }
            }
            self.publish(message)?;
            self.drain()?;
        }
        Ok(())
    }

    /// `-l`: a message per line of standard input, sent as soon as the line
    /// is complete; a last line without a newline is sent at end of input.
    fn lines(&mut self) -> Result<(), Exit> {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // Read no more input while the broker owes max_inflight acks.
            self.wait_inflight(self.cfg.max_inflight.saturating_sub(1))?;
            match self.client.next(Some(0), None).map_err(broken)? {
                Event::Input => {}
                _ => continue,
            }
            let n = crate::sys::read_stdin(&mut chunk);
            if n == 0 {
                if !pending.is_empty() {
                    self.publish(&pending)?;
                }
                return Ok(());
            }
            pending.extend_from_slice(&chunk[..n]);
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                self.publish(&line[..line.len() - 1])?;
            }
        }
    }
}
