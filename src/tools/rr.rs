//! `midge_rr`: one request, one response, as `mosquitto_rr`. It subscribes
//! to the response topic (`-e`), publishes the request (`-t`, with the
//! message of `-m -f -s -n`) once the subscription is acknowledged, prints
//! the first response as `midge_sub` would and exits. Over MQTT 5 (the
//! default) the request carries the response topic as its property
//! [MQTT-4.10]; `-V mqttv311` leaves it to the responder to know it.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::args::{Config, Kind};
use super::client::{Client, ConnectError, Event, Exit, rc};
use super::format;
use crate::codec::props::id;
use crate::codec::{Level, Value};
use crate::link::connack_string;

const USAGE: &str = "\
midge_rr is an mqtt client that can be used to publish a request message and wait for a response.
             Defaults to MQTT v5, where the Request-Response feature will be used, but v3.1.1 can also be used
             with v3.1.1 brokers.
midge_rr is part of midge; it takes the options of mosquitto_rr.

Usage: midge_rr {[-h host] [--unix path] [-p port] [-u username] [-P password] -t topic | -L URL} -e response-topic
                {-f file | -n | -s | -m message}
                [-c] [-k keepalive] [-q qos] [-R] [-x session-expiry-interval]
                [-F format]
                [-W timeout_secs]
                [-A bind_address] [--nodelay]
                [-i id] [-I id_prefix]
                [-d] [-N] [--quiet] [-v]
                [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]
                [-D command identifier value]
       midge_rr --help

 -A : bind the outgoing socket to this host/ip address.
 -c : disable clean session/enable persistent client mode; the session never expires
      unless -x sets an expiry interval.
 -d : enable debug messages.
 -D : Define MQTT v5 properties: -D command identifier value, e.g.
      -D publish correlation-data 42 or -D publish user-property key value.
 -e : Response topic. The client will subscribe to this topic to wait for a response.
 -f : send the contents of a file as the request.
 -F : output format, as midge_sub's.
 -h : mqtt host to connect to. Defaults to localhost.
 -i : id to use for this client. Defaults to an id the broker assigns.
 -I : define the client id as id_prefix appended with the process id.
 -k : keep alive in seconds for this client. Defaults to 60.
 -L : specify user, password, hostname, port and topic as a URL in the form:
      mqtt(s)://[username[:password]@]host[:port]/topic
 -m : the request message.
 -n : send a null (zero length) request.
 -N : do not add an end of line character when printing the payload.
 -p : network port to connect to. Defaults to 1883 for plain MQTT and 8883 for MQTT over TLS.
 -P : provide a password
 -q : quality of service level to use for communications. Defaults to 0.
 -R : do not print stale messages (those with retain set).
 -s : read the request from stdin.
 -t : topic where the request message will be sent.
 -u : provide a username
 -v : print received messages verbosely.
 -V : specify the version of the MQTT protocol to use when connecting.
      Can be mqttv5, mqttv311 or mqttv31. Defaults to mqttv5.
 -W : Specifies a timeout in seconds how long to wait for a response.
 -x : Set the session-expiry-interval property on the CONNECT packet (MQTT v5).
 --help : display this message.
 --nodelay : disable Nagle's algorithm.
 --quiet : don't print error messages.
 --unix : connect to a broker through a unix domain socket instead of a TCP socket.
 --will-payload : payload for the client Will.
 --will-qos : QoS level for the client Will.
 --will-retain : if given, make the client Will retained.
 --will-topic : the topic on which to publish the client Will.
";

pub fn main(args: Vec<OsString>) -> ExitCode {
    let mut cfg = match super::load(Kind::Rr, &args, USAGE) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The request names where the answer goes (MQTT 5).
    if let (Level::V5, Some(rt)) = (cfg.level, cfg.response_topic.clone()) {
        if cfg.props.publish.get(id::RESPONSE_TOPIC).is_none() {
            cfg.props.publish.push(id::RESPONSE_TOPIC, Value::Str(rt));
        }
    }
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::finish(&cfg, e),
    }
}

fn run(cfg: &Config) -> Result<(), Exit> {
    let (Some(topic), Some(response)) = (&cfg.topic, &cfg.response_topic) else {
        return Err(Exit::new(
            1,
            "Error: All of topic, message, and response topic must be supplied.\n",
        ));
    };
    let message = super::r#pub::load_message(cfg)?.unwrap_or_default();
    let deadline = cfg
        .timeout
        .map(|w| Instant::now() + Duration::from_secs(u64::from(w)));
    let lost = || Exit::new(rc::CONN_LOST, "Error: The connection was lost.\n");
    let mut c = match Client::connect(cfg, deadline) {
        Ok(c) => c,
        Err(ConnectError::Exit(e)) => return Err(e),
        Err(ConnectError::Refused(code)) => {
            return Err(Exit::new(
                code,
                format!("Connection error: {}\n", connack_string(code)),
            ));
        }
        Err(ConnectError::Deadline) => return Err(timed_out()),
        Err(ConnectError::Lost | ConnectError::Protocol) => return Err(lost()),
    };
    c.subscribe(std::slice::from_ref(response), cfg.qos)
        .map_err(|_| lost())?;
    loop {
        match c.next(None, deadline) {
            Ok(Event::SubAck(_)) => {
                c.publish(topic, &message, cfg.qos, false)
                    .map_err(|_| lost())?;
            }
            Ok(Event::Message(m)) => {
                if cfg.no_retain && m.retain {
                    continue;
                }
                let mut out = Vec::new();
                let mut errors = Vec::new();
                format::message(cfg, &m, &mut out, &mut errors);
                if !cfg.quiet {
                    for e in errors {
                        eprint!("{e}");
                    }
                }
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
                c.disconnect();
                return Ok(());
            }
            Ok(Event::Deadline) => return Err(timed_out()),
            Ok(_) => {}
            Err(_) => return Err(lost()),
        }
    }
}

fn timed_out() -> Exit {
    Exit::new(rc::TIMEOUT, "Timed out\n")
}
