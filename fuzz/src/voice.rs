//! What the voice parser targets (`voice_twilio`, `voice_cti`) check on a
//! parsed [`CallEvent`]: the rest of the untrusted path must not panic
//! either, and must do what `crates/voice` documents:
//!
//! - [`inbound_event`] turns every ringing inbound call into an
//!   `InboundEvent` the intake accepts (`validate`), with the customer, the
//!   address and the provider message id the module documentation promises
//!   (`phone:<normalized>`, `call:<provider>:<call id>` for a withheld
//!   number, `caller:<as given>` otherwise; the call id as the provider
//!   message id); an outbound call is `Outbound`, anything else `NotRinging`.
//! - [`CallState::apply`], from each phase, gives what the state machine's
//!   documentation says (see `expected`), and the same event applied twice
//!   changes the call once.

use switchboard_core::ChannelKind;
use switchboard_voice::{
    CallEvent, CallEventKind, CallState, Caller, Direction, EndCause, NotInbound, Phase, Provider,
    RouteStep, Stale, classify_caller, inbound_event, normalize_phone,
};

/// Runs `event` through [`inbound_event`] and through [`CallState::apply`]
/// from every phase.
pub fn check_call_event(event: &CallEvent) {
    check_inbound(event);
    for state in states(event) {
        check_apply(&state, event);
    }
}

fn check_inbound(event: &CallEvent) {
    let result = inbound_event(event, crate::SOURCE);
    let CallEventKind::Ringing {
        from,
        to,
        direction,
        caller_name,
        queue,
    } = &event.kind
    else {
        assert_eq!(result.err(), Some(NotInbound::NotRinging), "{event:?}");
        return;
    };
    if *direction == Direction::Outbound {
        assert_eq!(result.err(), Some(NotInbound::Outbound), "{event:?}");
        return;
    }
    let inbound = match result {
        Ok(inbound) => inbound,
        Err(e) => panic!("a parsed ringing inbound call is not a contact: {e:?} ({event:?})"),
    };
    let provider = event.provider.as_str();
    let (scheme, value) = match classify_caller(from) {
        Caller::Phone(number) => ("phone", number),
        // "one customer per call"
        Caller::Anonymous => ("call", format!("{provider}:{}", event.call_id)),
        Caller::Other(other) => ("caller", other),
    };
    assert_eq!(
        (
            inbound.customer.scheme.as_str(),
            inbound.customer.value.as_str()
        ),
        (scheme, value.as_str()),
        "customer of {event:?}"
    );
    // "a repeated incoming-call request is stored once", and only it.
    assert_eq!(
        inbound.provider_message_id.as_deref(),
        Some(event.call_id.as_str()),
        "provider message id of {event:?}"
    );
    let address = normalize_phone(to).unwrap_or_else(|| to.trim().to_owned());
    assert_eq!(inbound.address, address, "address of {event:?}");
    assert_eq!(inbound.channel, ChannelKind::Voice);
    assert_eq!(inbound.source, crate::SOURCE);
    assert_eq!(
        inbound.customer_name.as_deref(),
        caller_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty()),
    );
    assert_eq!(
        inbound.attributes.get("provider").map(String::as_str),
        Some(provider)
    );
    assert_eq!(inbound.attributes.get("queue"), queue.as_ref());
    assert_eq!(inbound.sent_at, event.at);
    if let Err(e) = inbound.validate(Default::default()) {
        panic!("the intake refuses the contact of {event:?}: {e:?}");
    }
}

/// A call in each phase: ringing, queued, offered, connected, ended; and,
/// when the event carries a sequence number, a connected call that has
/// applied that number already.
fn states(event: &CallEvent) -> Vec<CallState> {
    let report = |kind: CallEventKind, sequence: Option<u64>| CallEvent {
        provider: Provider::Cti,
        call_id: "state".into(),
        kind,
        sequence,
        at: None,
    };
    let answered = |sequence| report(CallEventKind::Answered { by: None }, sequence);
    let ringing = CallState::new();
    let queued = step(&ringing, RouteStep::Queued);
    let offered = step(&queued, RouteStep::Offered);
    let connected = applied(&offered, &answered(None));
    let ended = applied(
        &ringing,
        &report(
            CallEventKind::Ended {
                cause: EndCause::Completed,
                duration_secs: None,
            },
            None,
        ),
    );
    let mut states = vec![ringing, queued, offered, connected, ended];
    if let Some(sequence) = event.sequence {
        states.push(applied(&CallState::new(), &answered(Some(sequence))));
    }
    states
}

fn step(state: &CallState, step: RouteStep) -> CallState {
    match state.route(step) {
        Ok(t) => t.next,
        Err(e) => panic!("{step:?} from {:?}: {e:?}", state.phase()),
    }
}

fn applied(state: &CallState, event: &CallEvent) -> CallState {
    match state.apply(event) {
        Ok(t) => t.next,
        Err(e) => panic!("{event:?} on {:?}: {e:?}", state.phase()),
    }
}

/// What `state.apply(event)` must give, from `state.rs`'s documentation: the
/// phase after, whether the caller abandoned, whether the agent missed.
fn expected(state: &CallState, event: &CallEvent) -> Result<(Phase, bool, bool), Stale> {
    let phase = state.phase();
    if phase == Phase::Ended {
        return Err(Stale::Ended);
    }
    if let (Some(last), Some(got)) = (state.last_sequence(), event.sequence)
        && got <= last
    {
        return Err(Stale::OutOfOrder { last, got });
    }
    let wrong = Err(Stale::WrongPhase {
        phase,
        input: event.kind.as_str(),
    });
    match &event.kind {
        CallEventKind::Ringing { .. } => wrong,
        CallEventKind::Answered { .. } => match phase {
            Phase::Ringing | Phase::Queued | Phase::Offered => Ok((Phase::Connected, false, false)),
            Phase::Connected | Phase::Ended => wrong,
        },
        CallEventKind::AgentMissed { .. } if phase == Phase::Offered => {
            Ok((Phase::Queued, false, true))
        }
        CallEventKind::AgentMissed { .. } => wrong,
        CallEventKind::Ended { .. } => Ok((
            Phase::Ended,
            matches!(phase, Phase::Queued | Phase::Offered),
            false,
        )),
    }
}

fn check_apply(state: &CallState, event: &CallEvent) {
    let result = state.apply(event);
    let got = result
        .as_ref()
        .map(|t| (t.to, t.abandoned, t.missed))
        .map_err(|e| *e);
    assert_eq!(got, expected(state, event), "{event:?} on {state:?}");
    let Ok(t) = result else {
        return;
    };
    assert_eq!(t.from, state.phase());
    assert_eq!(t.next.phase(), t.to);
    assert_eq!(
        t.next.last_sequence(),
        state.last_sequence().max(event.sequence)
    );
    assert_eq!(t.next.offers(), state.offers());
    match &event.kind {
        CallEventKind::Answered { by } => assert_eq!(t.next.answered_by(), by.as_deref()),
        CallEventKind::Ended {
            cause,
            duration_secs,
        } => {
            let ending = t.next.ending().expect("an ended call has an ending");
            assert_eq!(&ending.cause, cause);
            assert_eq!(ending.duration_secs, *duration_secs);
            assert_eq!(ending.in_phase, state.phase());
            assert_eq!(ending.abandoned, t.abandoned);
        }
        CallEventKind::Ringing { .. } | CallEventKind::AgentMissed { .. } => {}
    }
    if t.to != Phase::Ended {
        assert_eq!(t.next.ending(), None);
    }
    // A repeat (providers retry) changes nothing.
    assert!(
        t.next.apply(event).is_err(),
        "{event:?} applied twice from {state:?}"
    );
}
