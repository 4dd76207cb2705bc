//! Mosquitto's db format versions 2 to 4 (Mosquitto 1.3 to 1.5): MQTT
//! 3.1.1 only, each field written in turn, strings as a u16 length and
//! bytes; a chunk header is type u16 | length u32.
//!
//! ```text
//! 1 CFG        shutdown u8 | dbid size u8 | last db id u64
//! 2 MSG_STORE  store id u64 | source id string | (version 4: source username
//!              string | source port u16) | source mid u16 | mid u16 | topic
//!              string | qos u8 | retain u8 | payload length u32 | payload
//! 3 CLIENT_MSG client id string | store id u64 | mid u16 | qos u8 | retain u8 |
//!              direction u8 | state u8 | dup u8
//! 4 RETAIN     store id u64
//! 5 SUB        client id string | filter string | qos u8
//! 6 CLIENT     client id string | last mid u16 | (versions 3 and 4: the
//!              disconnect time, a time_t of 4 or 8 bytes)
//! ```
//!
//! As in versions 5 and 6, the store ids are in the writer's byte order.
//! Sessions of these versions never expire.

use super::{ClientMsg, Msg, Reader, Session, Sub, le64};

const TRUNCATED: &str = "truncated chunk";

/// A u16 length and that many bytes.
fn string<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], &'static str> {
    let n = r.u16().ok_or(TRUNCATED)?;
    r.take(usize::from(n)).ok_or(TRUNCATED)
}

fn store_id(r: &mut Reader<'_>) -> Result<u64, &'static str> {
    Ok(le64(r.take(8).ok_or(TRUNCATED)?))
}

pub(super) fn msg_store(body: &[u8], version: u32) -> Result<Msg<'_>, &'static str> {
    let mut r = Reader(body);
    let store_id = store_id(&mut r)?;
    let source_id = string(&mut r)?;
    let source_user = if version == 4 {
        let user = string(&mut r)?;
        r.take(2).ok_or(TRUNCATED)?; // source port
        user
    } else {
        &[]
    };
    r.take(4).ok_or(TRUNCATED)?; // source mid, mid
    let topic = string(&mut r)?;
    let qos = r.u8().ok_or(TRUNCATED)?;
    let retain = r.u8().ok_or(TRUNCATED)? != 0;
    let n = r.u32().ok_or(TRUNCATED)?;
    let payload = r.take(n as usize).ok_or(TRUNCATED)?;
    Ok(Msg {
        store_id,
        expiry_time: 0,
        qos,
        retain,
        source_id,
        source_user,
        topic,
        payload,
        props: &[],
    })
}

pub(super) fn client_msg(body: &[u8]) -> Result<ClientMsg<'_>, &'static str> {
    let mut r = Reader(body);
    let client_id = string(&mut r)?;
    let store_id = store_id(&mut r)?;
    let mid = r.u16().ok_or(TRUNCATED)?;
    let f = r.take(5).ok_or(TRUNCATED)?;
    Ok(ClientMsg {
        store_id,
        mid,
        client_id,
        qos: f[0],
        retain: f[1] != 0,
        direction: f[2],
        state: f[3],
        dup: f[4] != 0,
        props: &[],
    })
}

pub(super) fn sub(body: &[u8]) -> Result<Sub<'_>, &'static str> {
    let mut r = Reader(body);
    let client_id = string(&mut r)?;
    let filter = string(&mut r)?;
    Ok(Sub {
        client_id,
        filter,
        qos: r.u8().ok_or(TRUNCATED)?,
        options: 0,
        sub_id: 0,
    })
}

pub(super) fn client(body: &[u8]) -> Result<Session<'_>, &'static str> {
    let mut r = Reader(body);
    let client_id = string(&mut r)?;
    Ok(Session {
        client_id,
        username: &[],
        last_mid: r.u16().ok_or(TRUNCATED)?,
        expiry_time: 0,
        interval: u32::MAX,
    })
}
