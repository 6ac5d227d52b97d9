//! Reading the routing event stream (`<prefix>:{r}:events`) and the KPI
//! facts stream (`<prefix>:{r}:kpi`, written the same way).
//!
//! Each entry has one field, `e`: the event as a JSON object of strings
//! (`type`, `contact`, `agent`, the agent's state after the change, `n`,
//! …). Events after which a contact may be waiting again (`enqueued`,
//! `requeued`, `declined`, `expired`, `revoked`) also carry `rec`, the
//! contact's routing record as the script left it, so the routing leader
//! does not read it back. One field instead of twenty-odd makes an event
//! cheaper for Redis to append and serve, and for every reader to parse
//! (each instance's leader and agent hub read every event).
//!
//! Entries written before this format (flat field/value pairs) are read
//! too, so a rolling upgrade keeps working.

use crate::assign::{RouteEvent, RouteRecord, live_from, record_from};
use redis::Value;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::HashMap;

/// The events of an `XREAD` reply (RESP2 arrays or RESP3 maps), taken
/// apart without copying the reply.
pub(crate) fn from_xread(reply: Value) -> Vec<RouteEvent> {
    // RESP2: `[[key, entries], …]`; RESP3: `{key: entries, …}`.
    let streams = match reply {
        Value::Map(map) => map,
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(kv) => {
                    let mut kv = kv.into_iter();
                    Some((kv.next()?, kv.next()?))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for (_, entries) in streams {
        if let Value::Array(entries) = entries {
            for entry in entries {
                if let Some(event) = from_entry(entry) {
                    out.push(event);
                }
            }
        }
    }
    out
}

/// `[id, [field, value, …]]` as a routing event.
pub(crate) fn from_entry(entry: Value) -> Option<RouteEvent> {
    let (id, fields, record) = entry_fields(entry)?;
    Some(event(id, fields, record))
}

/// The entries of an `XRANGE` reply: id and fields (the JSON body `e`
/// unpacked), oldest first. The KPI facts stream is written the same way.
pub(crate) fn from_xrange(reply: Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(entry_fields)
        .map(|(id, fields, _)| (id, fields))
        .collect()
}

/// `[id, [field, value, …]]`: the id, the fields (a JSON body `e`
/// unpacked into them) and the routing record a body carried.
fn entry_fields(entry: Value) -> Option<(String, HashMap<String, String>, Option<RouteRecord>)> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let mut parts = parts.into_iter();
    let id = text(parts.next()?)?;
    let mut fields = HashMap::new();
    let mut record = None;
    for (name, value) in pairs(parts.next()?) {
        let (Some(name), Some(value)) = (text(name), text(value)) else {
            continue;
        };
        if name == "e" {
            match unpack(&value, &mut fields) {
                Ok(r) => record = r,
                Err(()) => {
                    // Never written by Switchboard: counted and logged; the
                    // entry has no type, and the leader reloads on it.
                    metrics::counter!("switchboard_store_unreadable_entries_total").increment(1);
                    tracing::warn!(entry_id = %id, "A stream entry's body is not a JSON object; skipped.");
                }
            }
        } else {
            fields.entry(name).or_insert(value);
        }
    }
    Some((id, fields, record))
}

/// Fills `fields` from the JSON body; the contact's record when it has one.
/// `Err` when the body is not a JSON object.
fn unpack(body: &str, fields: &mut HashMap<String, String>) -> Result<Option<RouteRecord>, ()> {
    let body = serde_json::from_str::<Body>(body).map_err(|_| ())?;
    fields.extend(body.fields);
    Ok(body.rec.filter(|r| !r.is_empty()).map(record_from))
}

/// An entry's JSON body: values are strings (numbers are taken as their
/// text), except `rec`, an object of them. Read straight into maps, without
/// an intermediate `serde_json::Value` (every instance reads every event).
struct Body {
    fields: HashMap<String, String>,
    rec: Option<HashMap<String, String>>,
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Body;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
                let mut body = Body {
                    fields: HashMap::with_capacity(map.size_hint().unwrap_or(24)),
                    rec: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "rec" {
                        let rec: HashMap<String, Scalar> = map.next_value()?;
                        body.rec = Some(
                            rec.into_iter()
                                .filter_map(|(k, v)| v.0.map(|v| (k, v)))
                                .collect(),
                        );
                    } else if let Scalar(Some(value)) = map.next_value()? {
                        body.fields.insert(key, value);
                    }
                }
                Ok(body)
            }
        }
        d.deserialize_map(V)
    }
}

/// A string or number as text; anything else as nothing.
struct Scalar(Option<String>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(Some(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

pub(crate) fn event(
    id: String,
    fields: HashMap<String, String>,
    record: Option<RouteRecord>,
) -> RouteEvent {
    let live = fields.contains_key("loads").then(|| live_from(&fields));
    RouteEvent {
        id,
        kind: fields.get("type").cloned().unwrap_or_default(),
        contact: fields.get("contact").cloned(),
        agent: fields.get("agent").cloned(),
        live,
        record,
        fields,
    }
}

/// The (key, value) pairs of a flat array or a map.
fn pairs(value: Value) -> Vec<(Value, Value)> {
    match value {
        Value::Map(map) => map,
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                out.push((k, v));
            }
            out
        }
        _ => Vec::new(),
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn reply(entries: Vec<Value>) -> Value {
        Value::Array(vec![Value::Array(vec![
            bulk("sb:{r}:events"),
            Value::Array(entries),
        ])])
    }

    #[test]
    fn reads_a_json_event_with_its_record() {
        let body = r#"{"type":"enqueued","contact":"1-abc","n":"7",
            "rec":{"id":"1-abc","state":"waiting","queue":"sales","priority":"2","since":"1000","excluded":"a1,a2"}}"#;
        let events = from_xread(reply(vec![Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("e"), bulk(body)]),
        ])]));
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.id, "1-0");
        assert_eq!(e.kind, "enqueued");
        assert_eq!(e.contact.as_deref(), Some("1-abc"));
        assert_eq!(e.number(), 7);
        assert!(e.live.is_none());
        let rec = e.record.as_ref().expect("record");
        assert_eq!(rec.contact, "1-abc");
        assert_eq!(rec.queue, "sales");
        assert_eq!(rec.priority, 2);
        assert_eq!(rec.since, 1000);
        assert_eq!(rec.excluded, vec!["a1", "a2"]);
        assert!(!e.fields.contains_key("rec"));
    }

    #[test]
    fn reads_flat_events_written_before_json() {
        let events = from_xread(reply(vec![Value::Array(vec![
            bulk("2-0"),
            Value::Array(vec![
                bulk("type"),
                bulk("offered"),
                bulk("contact"),
                bulk("1-x"),
                bulk("agent"),
                bulk("ann"),
                bulk("loads"),
                bulk("1,0,0,0"),
                bulk("presence"),
                bulk("available"),
            ]),
        ])]));
        assert_eq!(events[0].kind, "offered");
        assert_eq!(events[0].agent.as_deref(), Some("ann"));
        let live = events[0].live.as_ref().expect("agent state");
        assert_eq!(live.loads, [1, 0, 0, 0]);
        assert_eq!(live.presence, "available");
        assert!(events[0].record.is_none());
    }

    #[test]
    fn nothing_and_garbage_give_no_events() {
        assert!(from_xread(Value::Nil).is_empty());
        let events = from_xread(reply(vec![
            bulk("not an entry"),
            Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("e"), bulk("{not json")]),
            ]),
        ]));
        // An entry whose body is not JSON still has its id (and no fields):
        // readers skip events without a type.
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "");
    }

    #[test]
    fn xrange_entries_unpack_their_body() {
        let facts = from_xrange(Value::Array(vec![
            Value::Array(vec![
                bulk("5-0"),
                Value::Array(vec![
                    bulk("e"),
                    bulk(r#"{"k":"answered","w":"1500","q":"sales"}"#),
                ]),
            ]),
            Value::Array(vec![
                bulk("6-0"),
                Value::Array(vec![bulk("k"), bulk("closed"), bulk("h"), bulk("60000")]),
            ]),
        ]));
        assert_eq!(facts.len(), 2);
        assert_eq!(facts[0].0, "5-0");
        assert_eq!(facts[0].1["w"], "1500");
        assert_eq!(facts[0].1["q"], "sales");
        assert_eq!(facts[1].1["k"], "closed");
        assert!(from_xrange(Value::Nil).is_empty());
    }

    #[test]
    fn bodies_take_numbers_as_text_and_skip_other_values() {
        let mut fields = HashMap::new();
        let rec = unpack(
            r#"{"type":"x","n":12,"w":-3,"f":1.5,"b":true,"z":null,"l":[1,{"a":2}],"o":{"a":"b"},
               "rec":{"id":"1-a","since":1000,"state":"waiting","odd":[1]}}"#,
            &mut fields,
        );
        assert_eq!(fields["n"], "12");
        assert_eq!(fields["w"], "-3");
        assert_eq!(fields["f"], "1.5");
        for skipped in ["b", "z", "l", "o", "rec"] {
            assert!(!fields.contains_key(skipped), "{skipped}");
        }
        let rec = rec.expect("valid").expect("record");
        assert_eq!((rec.contact.as_str(), rec.since), ("1-a", 1000));
        assert!(!rec.fields.contains_key("odd"));
        let mut none = HashMap::new();
        assert!(unpack("[1,2]", &mut none).is_err() && none.is_empty());
        assert_eq!(unpack(r#"{"rec":{}}"#, &mut none), Ok(None));
    }

    #[test]
    fn resp3_maps_are_read_too() {
        let events = from_xread(Value::Map(vec![(
            bulk("sb:{r}:events"),
            Value::Array(vec![Value::Array(vec![
                bulk("4-0"),
                Value::Map(vec![(
                    bulk("e"),
                    bulk(r#"{"type":"closed","contact":"1-y"}"#),
                )]),
            ])]),
        )]));
        assert_eq!(events[0].kind, "closed");
    }
}
