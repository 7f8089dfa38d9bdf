//! Segment's calls as `/v1` reads them: any bytes as one call of every type
//! and as a batch, then the calls that were read resolved to customers and
//! visitors (pure: no database) against nothing stored.
#![no_main]

use herald::ingest::resolve::{self, Known};
use herald::ingest::spec::{self, Action, Batch, CallType, MAX_ID};
use libfuzzer_sys::fuzz_target;

/// 2026-11-25T09:30:00Z: a fixed receive time keeps runs reproducible.
const NOW: i64 = 1_795_599_000_000;

const TYPES: [Option<CallType>; 7] = [
    None,
    Some(CallType::Identify),
    Some(CallType::Track),
    Some(CallType::Page),
    Some(CallType::Screen),
    Some(CallType::Group),
    Some(CallType::Alias),
];

fuzz_target!(|data: &[u8]| {
    let mut events = Vec::new();
    for route in TYPES {
        match spec::read(data, route, NOW, None) {
            Ok(event) => events.push(event),
            // A refusal always says why, and names a field only by its path.
            Err(refusal) => {
                assert!(!refusal.message.is_empty());
                if let Some(field) = &refusal.field {
                    assert!(!field.is_empty() && !field.starts_with('.'), "{field:?}");
                }
            }
        }
    }
    if let Ok(batch) = serde_json::from_slice::<Batch<'_>>(data) {
        for item in &batch.batch {
            if let Ok(event) = spec::read(item.get().as_bytes(), None, NOW, batch.sent_at.as_deref()) {
                events.push(event);
            }
        }
    }
    for e in &events {
        // Every call read names someone, by ids the database can hold.
        assert!(e.user_id.is_some() || e.anonymous_id.is_some());
        for id in [&e.user_id, &e.anonymous_id, &e.message_id].into_iter().flatten() {
            assert!(!id.is_empty() && id.len() <= MAX_ID && !id.contains('\0'), "{id:?}");
        }
        match &e.action {
            Action::Record { kind, .. } => assert!(!kind.trim().is_empty()),
            Action::Alias { previous_id } => assert!(e.user_id.is_some() && !previous_id.is_empty()),
            Action::Identify(_) => {}
        }
    }
    let resolved = resolve::resolve(&events, Known::default(), NOW);
    assert_eq!(resolved.outcomes.len(), events.len());
    let stored = resolved.outcomes.iter().filter(|o| o.is_ok()).count();
    let records = events
        .iter()
        .zip(&resolved.outcomes)
        .filter(|(e, o)| o.is_ok() && matches!(e.action, Action::Record { .. }))
        .count();
    // Every stored record is planned once: as a customer's interaction or a visitor's event.
    assert_eq!(
        resolved.plan.interactions.len() + resolved.plan.visitor_events.len(),
        records,
        "{stored} stored"
    );
    // Nothing was stored before: no visitor can be moved.
    assert!(resolved.plan.moves.is_empty());
});
