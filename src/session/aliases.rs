//! MQTT 5 topic aliases a sender sets up on one connection: a client's
//! towards the broker, a remote broker's towards a bridge.

/// Why a topic alias cannot be used [MQTT-3.3.2.3.4].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AliasError {
    /// 0, or above the Topic Alias Maximum announced to the sender.
    OutOfRange,
    /// In range, but never set up on this connection.
    Unknown,
}

/// The topic aliases one sender set up on one network connection
/// [MQTT-3.3.2-7], by alias - 1.
#[derive(Debug, Default)]
pub struct Aliases(Vec<Option<std::sync::Arc<str>>>);

impl Aliases {
    /// Forgets every alias (a new connection).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// MQTT 5: the topic of a PUBLISH that uses a topic alias, and the
    /// alias recorded for later ones; the alias is then taken off the
    /// message (it belongs to this connection, and is never forwarded).
    /// `max`: the Topic Alias Maximum announced to the sender.
    pub fn resolve(&mut self, p: &mut crate::codec::Publish, max: u16) -> Result<(), AliasError> {
        let Some(alias) = p.props.as_ref().and_then(|pp| pp.topic_alias) else {
            return Ok(());
        };
        if alias == 0 || alias > max {
            return Err(AliasError::OutOfRange);
        }
        let slot = usize::from(alias - 1);
        if p.topic.is_empty() {
            p.topic = self
                .0
                .get(slot)
                .cloned()
                .flatten()
                .ok_or(AliasError::Unknown)?;
        } else {
            if self.0.len() <= slot {
                self.0.resize(slot + 1, None);
            }
            self.0[slot] = Some(p.topic.clone());
        }
        if let Some(pp) = p.props.as_mut() {
            std::sync::Arc::make_mut(pp).topic_alias = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::{PubProps, Publish, QoS};

    fn with_alias(topic: &str, alias: u16) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Arc::from(topic),
            pkid: 0,
            payload: Arc::from(&b"x"[..]),
            props: Some(Arc::new(PubProps {
                topic_alias: Some(alias),
                ..PubProps::default()
            })),
        }
    }

    #[test]
    fn an_alias_is_set_used_bounded_and_forgotten() {
        let mut a = Aliases::default();
        let mut set = with_alias("a/b", 2);
        assert_eq!(a.resolve(&mut set, 2), Ok(()));
        assert_eq!(set.props.as_ref().and_then(|p| p.topic_alias), None);
        let mut used = with_alias("", 2);
        assert_eq!(a.resolve(&mut used, 2), Ok(()));
        assert_eq!(&*used.topic, "a/b");
        assert_eq!(
            a.resolve(&mut with_alias("", 1), 2),
            Err(AliasError::Unknown)
        );
        assert_eq!(
            a.resolve(&mut with_alias("c", 3), 2),
            Err(AliasError::OutOfRange)
        );
        assert_eq!(
            a.resolve(&mut with_alias("c", 0), 2),
            Err(AliasError::OutOfRange)
        );
        a.clear();
        assert_eq!(
            a.resolve(&mut with_alias("", 2), 2),
            Err(AliasError::Unknown)
        );
    }
}
