//! Identity resolution: who each call is about, and what storing a group of
//! calls writes. Pure: the store loads what the calls name ([`keys`] →
//! [`Known`]), [`resolve`] decides, the store writes the [`Plan`].
//!
//! The rules, in the order they are asked:
//! * **A customer is a person with an email.** `userId` is the customer's
//!   external id. An identify with `traits.email` finds the customer by
//!   email, or makes one; the traits merge under `herald import`'s rules
//!   ([`crate::import::merge`]: attributes key by key, never back to
//!   subscribed).
//! * **A visitor is a person without one yet**: an `anonymousId`, or a
//!   `userId` whose identify with an email has not come. Their traits and
//!   events are kept on the visitor.
//! * **`userId` decides before `anonymousId`.** A call with a known `userId`
//!   is that customer's. A call whose `anonymousId` is linked to a customer
//!   is that customer's, and gives it the call's `userId` when it has none.
//! * **Linking moves everything once.** When a visitor's id reaches a
//!   customer (an identify or a track naming both ids, an alias), the
//!   visitor's events become the customer's interactions, its traits fill the
//!   customer's empty fields (the customer's own values win), its ids point at
//!   the customer, and the visitor is gone. Two visitors that turn out to be
//!   one person become one visitor the same way.
//! * **The first link of an anonymous id stands.** A device shared by two
//!   people keeps its anonymous events with the first customer it was linked
//!   to; the second person's calls go by their own `userId`.
//! * **Two customers are never merged**, nor a customer's email changed: an
//!   identify whose email belongs to another user, or an alias of two
//!   customers, is refused as a conflict, and nothing of that call is stored.
//!
//! A group is resolved in order, so a group holds exactly what the same calls
//! one by one would have written; and against what is stored, so resolving
//! the same calls again (a retried batch) writes nothing new.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::spec::{Action, Event, Refusal, Traits};
use crate::clock::Millis;
use crate::customer::{CustomerRecord, CustomerStatus, Email};
use crate::import::{merge, unchanged};
use crate::store::customers::{CustomerWrite, StoredCustomer};
pub use crate::store::ingest::{
    IdKind, IdentityWrite, Keys, Known, Owner, Plan, Row, StoredOwner, VisitorWrite,
};

/// The ids, users and emails `events` name.
pub fn keys<'a>(events: impl IntoIterator<Item = &'a Event>) -> Keys {
    names_of(events, |_| true)
}

/// The names of the calls among `events` whose storing reads and changes
/// what other calls might change at the same time: every call but the
/// commonest, an event of a user who is a customer already, with no
/// anonymous id (it only adds an interaction, keyed by its `messageId`).
/// On PostgreSQL these are locked across processes before resolving.
pub fn racy_keys<'a>(events: impl IntoIterator<Item = &'a Event>, known: &Known) -> Keys {
    let customers: std::collections::HashSet<&str> = known
        .customers
        .iter()
        .filter_map(|c| c.external_id.as_deref())
        .collect();
    names_of(events, |e| {
        let plain = matches!(e.action, Action::Record { .. })
            && e.anonymous_id.is_none()
            && e.user_id.as_deref().is_some_and(|u| customers.contains(u));
        !plain
    })
}

/// The visitors and customers that the ids and emails of `names` reach in
/// `known` (as visitor keys and customer emails): what a group changes
/// besides the names themselves, locked with them so that two groups
/// reaching one person by different ids wait for each other.
pub fn reached(known: &Known, names: &Keys) -> Keys {
    let mut out = Keys::default();
    let emails: HashMap<i64, &Email> = known.customers.iter().map(|c| (c.id, &c.email)).collect();
    for (kind, value, owner) in &known.identities {
        let named = match kind {
            IdKind::Anonymous => names.anonymous.contains(value),
            IdKind::User => names.users.contains(value),
        };
        if !named {
            continue;
        }
        match owner {
            StoredOwner::Visitor(v) => {
                out.visitors.insert(v.clone());
            }
            StoredOwner::Customer(id) => {
                if let Some(e) = emails.get(id) {
                    out.emails.insert(e.as_str().to_string());
                }
            }
        }
    }
    for c in &known.customers {
        let by_user = c
            .external_id
            .as_ref()
            .is_some_and(|x| names.users.contains(x));
        if by_user || names.emails.contains(c.email.as_str()) {
            out.emails.insert(c.email.as_str().to_string());
        }
    }
    out
}

fn names_of<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    wanted: impl Fn(&Event) -> bool,
) -> Keys {
    let mut keys = Keys::default();
    for e in events.into_iter().filter(|e| wanted(e)) {
        if let Some(a) = &e.anonymous_id {
            keys.anonymous.insert(a.clone());
        }
        if let Some(u) = &e.user_id {
            keys.users.insert(u.clone());
        }
        match &e.action {
            Action::Identify(t) => {
                if let Some(email) = &t.email {
                    keys.emails.insert(email.as_str().to_string());
                }
            }
            Action::Alias { previous_id } => {
                keys.anonymous.insert(previous_id.clone());
                keys.users.insert(previous_id.clone());
            }
            Action::Record { .. } => {}
        }
    }
    keys
}

/// A visitor's traits as stored: the customer fields they will fill, and
/// the rest as attributes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VisitorTraits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CustomerStatus>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
}

impl VisitorTraits {
    /// `newer` over `self`: given fields replace, attributes merge key by key;
    /// a status other than subscribed is never undone.
    fn overlay(&mut self, newer: VisitorTraits) {
        let VisitorTraits {
            first_name,
            last_name,
            timezone,
            status,
            attributes,
        } = newer;
        self.first_name = first_name.or(self.first_name.take());
        self.last_name = last_name.or(self.last_name.take());
        self.timezone = timezone.or(self.timezone.take());
        self.status = match (self.status, status) {
            (Some(old), Some(CustomerStatus::Subscribed)) => Some(old),
            (old, new) => new.or(old),
        };
        self.attributes.extend(attributes);
    }

    fn from_traits(t: Traits) -> VisitorTraits {
        VisitorTraits {
            first_name: t.first_name,
            last_name: t.last_name,
            timezone: t.timezone,
            status: t.status,
            attributes: t.attributes,
        }
    }

    /// As stored (a JSON object).
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// Read back; a stored object that is not one (it never is) reads as none.
    pub fn from_map(map: Map<String, Value>) -> VisitorTraits {
        serde_json::from_value(Value::Object(map)).unwrap_or_default()
    }
}

struct Person {
    current: StoredCustomer,
    original: Option<StoredCustomer>,
}

struct Visitor {
    traits: VisitorTraits,
    stored: bool,
    dirty: bool,
    created_at: Millis,
}

struct World {
    now: Millis,
    people: HashMap<Email, Person>,
    by_external: HashMap<String, Email>,
    ids: HashMap<(IdKind, String), Owner>,
    /// Ids whose owner this group sets, in order of first change.
    id_writes: Vec<(IdKind, String)>,
    visitors: HashMap<String, Visitor>,
    /// Visitors that became part of someone else, and whose.
    moved: HashMap<String, Owner>,
    /// Moves in order, by visitor.
    move_order: Vec<String>,
    records: Vec<(Owner, Row)>,
}

/// A group of calls resolved: what to write, and per call, in order,
/// whether it is stored or why not.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub plan: Plan,
    pub outcomes: Vec<Result<(), Refusal>>,
}

/// Resolves `events` in order against `known`, at `now`.
pub fn resolve<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    known: Known,
    now: Millis,
) -> Resolved {
    let mut world = World::new(known, now);
    let outcomes = events.into_iter().map(|e| world.apply(e)).collect();
    Resolved {
        plan: world.finish(),
        outcomes,
    }
}

impl World {
    fn new(known: Known, now: Millis) -> World {
        let mut world = World {
            now,
            people: HashMap::new(),
            by_external: HashMap::new(),
            ids: HashMap::new(),
            id_writes: Vec::new(),
            visitors: HashMap::new(),
            moved: HashMap::new(),
            move_order: Vec::new(),
            records: Vec::new(),
        };
        let mut by_id = HashMap::new();
        for c in known.customers {
            by_id.insert(c.id, c.email.clone());
            if let Some(x) = &c.external_id {
                world.by_external.insert(x.clone(), c.email.clone());
            }
            world.people.insert(
                c.email.clone(),
                Person {
                    current: c.clone(),
                    original: Some(c),
                },
            );
        }
        for (key, traits) in known.visitors {
            world.visitors.insert(
                key,
                Visitor {
                    traits: VisitorTraits::from_map(traits),
                    stored: true,
                    dirty: false,
                    created_at: now,
                },
            );
        }
        for (kind, value, owner) in known.identities {
            let owner = match owner {
                StoredOwner::Customer(id) => by_id.get(&id).cloned().map(Owner::Customer),
                StoredOwner::Visitor(key) => world
                    .visitors
                    .contains_key(&key)
                    .then_some(Owner::Visitor(key)),
            };
            if let Some(owner) = owner {
                world.ids.insert((kind, value), owner);
            }
        }
        world
    }

    fn apply(&mut self, event: &Event) -> Result<(), Refusal> {
        let u = event.user_id.as_deref();
        let a = event.anonymous_id.as_deref();
        match &event.action {
            Action::Identify(traits) => self.identify(u, a, traits.clone()),
            Action::Record { kind, data } => {
                self.record(
                    u,
                    a,
                    Row {
                        kind: kind.clone(),
                        occurred_at: event.at,
                        external_id: event.message_id.clone(),
                        data: data.clone(),
                    },
                );
                Ok(())
            }
            Action::Alias { previous_id } => match u {
                Some(u) => self.alias(u, previous_id),
                None => Err(Refusal::malformed(
                    Some("userId"),
                    "an alias call needs `userId`",
                )),
            },
        }
    }

    // -- looking up ------------------------------------------------------

    /// `owner` after the moves made so far.
    fn follow(&self, mut owner: Owner) -> Owner {
        while let Owner::Visitor(v) = &owner {
            match self.moved.get(v) {
                Some(next) => owner = next.clone(),
                None => break,
            }
        }
        owner
    }

    fn owner_of(&self, kind: IdKind, value: &str) -> Option<Owner> {
        self.ids
            .get(&(kind, value.to_string()))
            .map(|o| self.follow(o.clone()))
    }

    fn customer_of_user(&self, u: &str) -> Option<Email> {
        if let Some(e) = self.by_external.get(u) {
            return Some(e.clone());
        }
        match self.owner_of(IdKind::User, u) {
            Some(Owner::Customer(e)) => Some(e),
            _ => None,
        }
    }

    fn customer_of_anonymous(&self, a: &str) -> Option<Email> {
        match self.owner_of(IdKind::Anonymous, a) {
            Some(Owner::Customer(e)) => Some(e),
            _ => None,
        }
    }

    fn visitor_of(&self, kind: IdKind, value: &str) -> Option<String> {
        match self.owner_of(kind, value) {
            Some(Owner::Visitor(v)) => Some(v),
            _ => None,
        }
    }

    fn external_id_of(&self, e: &Email) -> Option<&str> {
        self.people
            .get(e)
            .and_then(|p| p.current.external_id.as_deref())
    }

    // -- changing ----------------------------------------------------------

    fn link(&mut self, kind: IdKind, value: &str, owner: Owner) {
        let key = (kind, value.to_string());
        if self.ids.get(&key) == Some(&owner) {
            return;
        }
        if !self.id_writes.contains(&key) {
            self.id_writes.push(key.clone());
        }
        self.ids.insert(key, owner);
    }

    /// Gives customer `e` the user id `u` when it has none and no one else
    /// has it; otherwise records `u` as one of its ids.
    fn give_user_id(&mut self, e: &Email, u: &str) {
        if self.external_id_of(e) == Some(u) {
            return;
        }
        if self.external_id_of(e).is_none() && !self.by_external.contains_key(u) {
            if let Some(p) = self.people.get_mut(e) {
                p.current.external_id = Some(u.to_string());
                p.current.updated_at = self.now;
            }
            self.by_external.insert(u.to_string(), e.clone());
        } else if !matches!(self.owner_of(IdKind::User, u), Some(Owner::Customer(_))) {
            self.link(IdKind::User, u, Owner::Customer(e.clone()));
        }
    }

    /// Makes customer `e` the owner of the call's ids: a visitor they name
    /// is moved into it, an unknown anonymous id is linked to it.
    fn claim(&mut self, e: &Email, u: Option<&str>, a: Option<&str>) {
        if let Some(u) = u {
            if let Some(v) = self.visitor_of(IdKind::User, u) {
                self.absorb(&v, Owner::Customer(e.clone()));
            }
            if self.customer_of_user(u).is_none() {
                self.give_user_id(e, u);
            }
        }
        if let Some(a) = a {
            match self.owner_of(IdKind::Anonymous, a) {
                None => self.link(IdKind::Anonymous, a, Owner::Customer(e.clone())),
                Some(Owner::Visitor(v)) => self.absorb(&v, Owner::Customer(e.clone())),
                Some(Owner::Customer(_)) => {}
            }
        }
    }

    /// The visitor the call's ids name, made if there is none; two visitors
    /// it names become one.
    fn visitor_for(&mut self, u: Option<&str>, a: Option<&str>) -> String {
        let by_user = u.and_then(|u| self.visitor_of(IdKind::User, u));
        let by_anonymous = a.and_then(|a| self.visitor_of(IdKind::Anonymous, a));
        let v = match (by_user, by_anonymous) {
            (Some(x), Some(y)) => {
                if x != y {
                    self.absorb(&y, Owner::Visitor(x.clone()));
                }
                x
            }
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => {
                let key = match (u, a) {
                    (Some(u), _) => format!("u:{u}"),
                    (None, Some(a)) => format!("a:{a}"),
                    (None, None) => String::new(),
                };
                self.visitors.entry(key.clone()).or_insert(Visitor {
                    traits: VisitorTraits::default(),
                    stored: false,
                    dirty: true,
                    created_at: self.now,
                });
                key
            }
        };
        if let Some(u) = u
            && self.owner_of(IdKind::User, u).is_none()
            && self.customer_of_user(u).is_none()
        {
            self.link(IdKind::User, u, Owner::Visitor(v.clone()));
        }
        if let Some(a) = a
            && self.owner_of(IdKind::Anonymous, a).is_none()
        {
            self.link(IdKind::Anonymous, a, Owner::Visitor(v.clone()));
        }
        v
    }

    /// Visitor `v` becomes part of `into`.
    fn absorb(&mut self, v: &str, into: Owner) {
        let into = self.follow(into);
        if into == Owner::Visitor(v.to_string()) || self.moved.contains_key(v) {
            return;
        }
        let traits = self
            .visitors
            .get(v)
            .map(|x| x.traits.clone())
            .unwrap_or_default();
        self.moved.insert(v.to_string(), into.clone());
        self.move_order.push(v.to_string());
        match &into {
            Owner::Customer(e) => {
                self.fill_in(e, traits);
                // The visitor's user ids (those this group knows) are the customer's.
                let users: Vec<String> = self
                    .ids
                    .iter()
                    .filter(|((kind, _), owner)| {
                        *kind == IdKind::User && **owner == Owner::Visitor(v.to_string())
                    })
                    .map(|((_, value), _)| value.clone())
                    .collect();
                for u in users {
                    self.give_user_id(e, &u);
                }
            }
            Owner::Visitor(w) => {
                if let Some(target) = self.visitors.get_mut(w) {
                    let mut merged = traits;
                    merged.overlay(std::mem::take(&mut target.traits));
                    target.traits = merged;
                    target.dirty = true;
                }
            }
        }
    }

    /// A visitor's traits fill customer `e`'s empty fields and missing
    /// attributes; a status other than subscribed applies.
    fn fill_in(&mut self, e: &Email, t: VisitorTraits) {
        let Some(p) = self.people.get_mut(e) else {
            return;
        };
        let c = &mut p.current;
        let before = c.clone();
        c.first_name = c.first_name.take().or(t.first_name);
        c.last_name = c.last_name.take().or(t.last_name);
        c.timezone = c.timezone.take().or(t.timezone);
        if let Some(s) = t.status
            && s != CustomerStatus::Subscribed
            && c.status == CustomerStatus::Subscribed
        {
            c.status = s;
        }
        for (k, v) in t.attributes {
            c.attributes.entry(k).or_insert(v);
        }
        if *c != before {
            c.updated_at = self.now;
        }
    }

    // -- the calls ---------------------------------------------------------

    fn identify(&mut self, u: Option<&str>, a: Option<&str>, t: Traits) -> Result<(), Refusal> {
        let by_user = u.and_then(|u| self.customer_of_user(u));
        let by_email = t
            .email
            .as_ref()
            .filter(|e| self.people.contains_key(*e))
            .cloned();
        let target = match (by_user, by_email, &t.email) {
            (Some(x), Some(y), _) if x != y => {
                return Err(refused_email(&y, "belongs to another customer", u));
            }
            (Some(_), None, Some(e)) => {
                return Err(refused_email(
                    e,
                    "differs from the user's stored email (an identify does not change a \
                     customer's email)",
                    u,
                ));
            }
            (Some(x), _, _) => Some(x),
            (None, Some(y), _) => {
                if let (Some(u), Some(other)) = (u, self.external_id_of(&y))
                    && other != u
                {
                    return Err(refused_email(
                        &y,
                        &format!("belongs to another user (userId {other:?})"),
                        Some(u),
                    ));
                }
                Some(y)
            }
            (None, None, Some(e)) => {
                let fresh = StoredCustomer {
                    id: 0,
                    email: e.clone(),
                    external_id: None,
                    first_name: None,
                    last_name: None,
                    status: CustomerStatus::Subscribed,
                    timezone: None,
                    attributes: Map::new(),
                    created_at: self.now,
                    updated_at: self.now,
                };
                self.people.insert(
                    e.clone(),
                    Person {
                        current: fresh,
                        original: None,
                    },
                );
                Some(e.clone())
            }
            (None, None, None) => match a.and_then(|a| self.customer_of_anonymous(a)) {
                Some(x) if u.is_none() || self.external_id_of(&x).is_none() => Some(x),
                _ => None,
            },
        };
        match target {
            Some(e) => {
                self.claim(&e, u, a);
                self.merge_traits(&e, t);
            }
            None => {
                let v = self.visitor_for(u, a);
                if let Some(visitor) = self.visitors.get_mut(&v) {
                    visitor.traits.overlay(VisitorTraits::from_traits(t));
                    visitor.dirty = true;
                }
            }
        }
        Ok(())
    }

    /// An identify's traits over customer `e`, by the import's merge rule.
    fn merge_traits(&mut self, e: &Email, t: Traits) {
        let Some(p) = self.people.get_mut(e) else {
            return;
        };
        let record = CustomerRecord {
            email: e.clone(),
            external_id: None,
            first_name: t.first_name,
            last_name: t.last_name,
            status: t.status,
            timezone: t.timezone,
            created_at: None,
            attributes: t.attributes,
        };
        let write = merge(Some(&p.current), record, self.now);
        if !unchanged(&p.current, &write) {
            let id = p.current.id;
            p.current = stored(id, write);
        }
    }

    fn record(&mut self, u: Option<&str>, a: Option<&str>, row: Row) {
        let target = match u {
            Some(u) => self.customer_of_user(u).or_else(|| {
                a.and_then(|a| self.customer_of_anonymous(a))
                    .filter(|x| self.external_id_of(x).is_none())
            }),
            None => a.and_then(|a| self.customer_of_anonymous(a)),
        };
        let owner = match target {
            Some(e) => {
                self.claim(&e, u, a);
                Owner::Customer(e)
            }
            None => Owner::Visitor(self.visitor_for(u, a)),
        };
        self.records.push((owner, row));
    }

    fn alias(&mut self, u: &str, previous: &str) -> Result<(), Refusal> {
        let new_side = self
            .customer_of_user(u)
            .map(Owner::Customer)
            .or_else(|| self.visitor_of(IdKind::User, u).map(Owner::Visitor));
        let old_side = self
            .customer_of_user(previous)
            .map(Owner::Customer)
            .or_else(|| self.owner_of(IdKind::Anonymous, previous))
            .or_else(|| self.owner_of(IdKind::User, previous));
        match (new_side, old_side) {
            (Some(Owner::Customer(x)), Some(Owner::Customer(y))) => {
                if x != y {
                    return Err(Refusal::conflict(format!(
                        "previousId {previous:?} is the customer {y} and userId {u:?} the \
                         customer {x}: Herald does not merge two customers"
                    )));
                }
            }
            (Some(Owner::Customer(x)), old) => match old {
                Some(Owner::Visitor(v)) => self.absorb(&v, Owner::Customer(x)),
                _ => self.link(IdKind::Anonymous, previous, Owner::Customer(x)),
            },
            (new, Some(Owner::Customer(y))) => {
                if let Some(Owner::Visitor(v)) = new {
                    self.absorb(&v, Owner::Customer(y.clone()));
                }
                self.give_user_id(&y, u);
            }
            (Some(Owner::Visitor(v)), Some(Owner::Visitor(w))) => {
                self.absorb(&w, Owner::Visitor(v));
            }
            (Some(Owner::Visitor(v)), None) => {
                self.link(IdKind::Anonymous, previous, Owner::Visitor(v));
            }
            (None, Some(Owner::Visitor(w))) => {
                self.link(IdKind::User, u, Owner::Visitor(w));
            }
            (None, None) => {
                let v = self.visitor_for(Some(u), None);
                self.link(IdKind::Anonymous, previous, Owner::Visitor(v));
            }
        }
        Ok(())
    }

    // -- the plan ------------------------------------------------------------

    fn finish(self) -> Plan {
        let mut plan = Plan {
            now: self.now,
            ..Plan::default()
        };
        let mut people: Vec<&Person> = self.people.values().collect();
        people.sort_by(|a, b| a.current.email.cmp(&b.current.email));
        for p in people {
            match &p.original {
                Some(o) => {
                    plan.customer_ids.insert(o.email.clone(), o.id);
                    if !unchanged(o, &write_of(&p.current)) {
                        plan.customers.push(write_of(&p.current));
                    }
                }
                None => plan.customers.push(write_of(&p.current)),
            }
        }
        let mut visitors: Vec<(&String, &Visitor)> = self
            .visitors
            .iter()
            .filter(|(k, v)| v.dirty && !self.moved.contains_key(*k))
            .collect();
        visitors.sort_by(|a, b| a.0.cmp(b.0));
        plan.visitors = visitors
            .into_iter()
            .map(|(key, v)| VisitorWrite {
                key: key.clone(),
                stored: v.stored,
                traits: v.traits.to_map(),
                created_at: v.created_at,
                updated_at: self.now,
            })
            .collect();
        for (kind, value) in &self.id_writes {
            let Some(owner) = self.owner_of(*kind, value) else {
                continue;
            };
            // A user id kept as the customer's external id needs no row.
            if let (IdKind::User, Owner::Customer(e)) = (kind, &owner)
                && self.external_id_of(e) == Some(value.as_str())
            {
                continue;
            }
            plan.identities.push(IdentityWrite {
                kind: *kind,
                value: value.clone(),
                owner,
            });
        }
        for v in &self.move_order {
            if self.visitors.get(v).is_some_and(|x| x.stored) {
                plan.moves
                    .push((v.clone(), self.follow(Owner::Visitor(v.clone()))));
            }
        }
        for (owner, row) in self.records.iter().cloned() {
            match self.follow(owner) {
                Owner::Customer(e) => plan.interactions.push((e, row)),
                Owner::Visitor(v) => plan.visitor_events.push((v, row)),
            }
        }
        plan
    }
}

fn refused_email(email: &Email, why: &str, u: Option<&str>) -> Refusal {
    let user = u.map(|u| format!(" for userId {u:?}")).unwrap_or_default();
    let mut r = Refusal::conflict(format!("traits.email {email}{user} {why}"));
    r.field = Some("traits.email".into());
    r
}

fn write_of(c: &StoredCustomer) -> CustomerWrite {
    CustomerWrite {
        email: c.email.clone(),
        external_id: c.external_id.clone(),
        first_name: c.first_name.clone(),
        last_name: c.last_name.clone(),
        status: c.status,
        timezone: c.timezone.clone(),
        attributes: c.attributes.clone(),
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

fn stored(id: i64, w: CustomerWrite) -> StoredCustomer {
    StoredCustomer {
        id,
        email: w.email,
        external_id: w.external_id,
        first_name: w.first_name,
        last_name: w.last_name,
        status: w.status,
        timezone: w.timezone,
        attributes: w.attributes,
        created_at: w.created_at,
        updated_at: w.updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::spec::read;
    use serde_json::json;

    const NOW: Millis = 1_765_000_000_000;

    fn call(v: Value) -> Event {
        read(v.to_string().as_bytes(), None, NOW, None).unwrap()
    }

    fn email(e: &str) -> Email {
        Email::parse(e).unwrap()
    }

    fn customer(id: i64, e: &str, user: Option<&str>) -> StoredCustomer {
        StoredCustomer {
            id,
            email: email(e),
            external_id: user.map(str::to_string),
            first_name: None,
            last_name: None,
            status: CustomerStatus::Subscribed,
            timezone: None,
            attributes: Map::new(),
            created_at: 1,
            updated_at: 1,
        }
    }

    fn kinds(rows: &[(impl std::fmt::Debug, Row)]) -> Vec<String> {
        rows.iter()
            .map(|(o, r)| format!("{o:?}:{}", r.kind))
            .collect()
    }

    #[test]
    fn anonymous_events_wait_on_a_visitor_and_move_on_identify() {
        let events = [
            call(json!({"type": "page", "anonymousId": "anon-1", "messageId": "m1"})),
            call(json!({"type": "identify", "anonymousId": "anon-1",
                        "traits": {"firstName": "Ann", "plan": "free"}})),
            call(
                json!({"type": "track", "anonymousId": "anon-1", "event": "Added", "messageId": "m2"}),
            ),
            call(
                json!({"type": "identify", "anonymousId": "anon-1", "userId": "u1",
                        "traits": {"email": "ann@x.com", "plan": "pro"}}),
            ),
            call(json!({"type": "track", "userId": "u1", "event": "Bought", "messageId": "m3"})),
        ];
        let Resolved { plan, outcomes } = resolve(&events, Known::default(), NOW);
        assert!(outcomes.iter().all(Result::is_ok));
        // Made and moved in one group: nothing of the visitor is written.
        assert!(plan.visitors.is_empty(), "{:?}", plan.visitors);
        assert!(plan.visitor_events.is_empty());
        assert!(plan.moves.is_empty());
        assert_eq!(plan.customers.len(), 1);
        let c = &plan.customers[0];
        assert_eq!(c.external_id.as_deref(), Some("u1"));
        assert_eq!(c.first_name.as_deref(), Some("Ann"));
        assert_eq!(c.attributes.get("plan"), Some(&json!("pro")));
        assert_eq!(
            kinds(&plan.interactions),
            [
                "Email(\"ann@x.com\"):page_view",
                "Email(\"ann@x.com\"):Added",
                "Email(\"ann@x.com\"):Bought"
            ]
        );
        assert_eq!(
            plan.identities,
            [IdentityWrite {
                kind: IdKind::Anonymous,
                value: "anon-1".into(),
                owner: Owner::Customer(email("ann@x.com"))
            }]
        );
    }

    #[test]
    fn a_stored_visitor_moves_into_a_stored_customer() {
        let known = Known {
            customers: vec![customer(7, "bo@x.com", Some("u7"))],
            identities: vec![(
                IdKind::Anonymous,
                "a9".into(),
                StoredOwner::Visitor("a:a9".into()),
            )],
            visitors: vec![(
                "a:a9".into(),
                json!({"first_name": "Bo", "attributes": {"src": "ad"}})
                    .as_object()
                    .unwrap()
                    .clone(),
            )],
        };
        let events = [call(
            json!({"type": "track", "userId": "u7", "anonymousId": "a9", "event": "Login"}),
        )];
        let Resolved { plan, .. } = resolve(&events, known, NOW);
        assert_eq!(
            plan.moves,
            [("a:a9".to_string(), Owner::Customer(email("bo@x.com")))]
        );
        assert_eq!(plan.customers.len(), 1);
        assert_eq!(plan.customers[0].first_name.as_deref(), Some("Bo"));
        assert_eq!(plan.customers[0].attributes.get("src"), Some(&json!("ad")));
        assert_eq!(plan.customer_ids.get(&email("bo@x.com")), Some(&7));
        assert_eq!(kinds(&plan.interactions), ["Email(\"bo@x.com\"):Login"]);
        // The id follows the move in SQL; no row of its own is needed.
        assert!(plan.identities.is_empty(), "{:?}", plan.identities);
    }

    #[test]
    fn resolving_again_writes_nothing_new() {
        let known = Known {
            customers: vec![{
                let mut c = customer(3, "cy@x.com", Some("u3"));
                c.attributes.insert("plan".into(), json!("pro"));
                c
            }],
            identities: vec![(IdKind::Anonymous, "a3".into(), StoredOwner::Customer(3))],
            visitors: vec![],
        };
        let events = [
            call(
                json!({"type": "identify", "userId": "u3", "anonymousId": "a3",
                        "traits": {"email": "cy@x.com", "plan": "pro"}}),
            ),
            call(json!({"type": "track", "anonymousId": "a3", "event": "E", "messageId": "m"})),
        ];
        let Resolved { plan, .. } = resolve(&events, known, NOW);
        assert!(plan.customers.is_empty());
        assert!(plan.identities.is_empty() && plan.visitors.is_empty() && plan.moves.is_empty());
        // The interaction is planned again; its messageId makes the insert a no-op.
        assert_eq!(plan.interactions.len(), 1);
    }

    #[test]
    fn conflicts_are_refused_and_the_rest_goes_on() {
        let known = Known {
            customers: vec![
                customer(1, "a@x.com", Some("ua")),
                customer(2, "b@x.com", Some("ub")),
            ],
            ..Known::default()
        };
        let events = [
            call(json!({"type": "identify", "userId": "ua", "traits": {"email": "b@x.com"}})),
            call(json!({"type": "identify", "userId": "ua", "traits": {"email": "new@x.com"}})),
            call(json!({"type": "identify", "userId": "uz", "traits": {"email": "a@x.com"}})),
            call(json!({"type": "alias", "userId": "ua", "previousId": "ub"})),
            call(
                json!({"type": "identify", "userId": "ua", "traits": {"email": "a@x.com", "vip": true}}),
            ),
        ];
        let Resolved { plan, outcomes } = resolve(&events, known, NOW);
        let faults: Vec<bool> = outcomes.iter().map(Result::is_err).collect();
        assert_eq!(faults, [true, true, true, true, false]);
        assert_eq!(
            outcomes[0].as_ref().unwrap_err().field.as_deref(),
            Some("traits.email")
        );
        assert_eq!(plan.customers.len(), 1);
        assert_eq!(plan.customers[0].attributes.get("vip"), Some(&json!(true)));
    }

    #[test]
    fn only_calls_that_change_who_is_who_are_locked() {
        let known = Known {
            customers: vec![customer(1, "a@x.com", Some("ua"))],
            ..Known::default()
        };
        let events = [
            call(json!({"type": "track", "userId": "ua", "event": "E"})),
            call(json!({"type": "track", "userId": "ub", "event": "E"})),
            call(json!({"type": "page", "userId": "ua", "anonymousId": "an"})),
            call(json!({"type": "identify", "userId": "ua", "traits": {"email": "a@x.com"}})),
        ];
        let racy = racy_keys(&events, &known);
        assert_eq!(racy.users.iter().collect::<Vec<_>>(), ["ua", "ub"]);
        assert_eq!(racy.anonymous.iter().collect::<Vec<_>>(), ["an"]);
        assert_eq!(racy.emails.iter().collect::<Vec<_>>(), ["a@x.com"]);
        assert!(racy_keys(&events[..1], &known).is_empty());
    }

    #[test]
    fn the_people_names_reach_are_locked_too() {
        let known = Known {
            customers: vec![
                customer(1, "a@x.com", Some("ua")),
                customer(2, "b@x.com", None),
            ],
            identities: vec![
                (IdKind::Anonymous, "an".into(), StoredOwner::Customer(2)),
                (
                    IdKind::User,
                    "uv".into(),
                    StoredOwner::Visitor("a:av".into()),
                ),
            ],
            visitors: vec![("a:av".into(), Map::new())],
        };
        let events = [
            call(json!({"type": "identify", "anonymousId": "an", "traits": {"plan": "pro"}})),
            call(json!({"type": "track", "userId": "uv", "event": "E"})),
            call(json!({"type": "identify", "userId": "ua", "traits": {"vip": true}})),
        ];
        let names = racy_keys(&events, &known);
        let more = reached(&known, &names);
        assert_eq!(
            more.emails.iter().collect::<Vec<_>>(),
            ["a@x.com", "b@x.com"]
        );
        assert_eq!(more.visitors.iter().collect::<Vec<_>>(), ["a:av"]);
    }

    #[test]
    fn identify_never_resubscribes() {
        let mut c = customer(1, "a@x.com", Some("ua"));
        c.status = CustomerStatus::Unsubscribed;
        let known = Known {
            customers: vec![c],
            ..Known::default()
        };
        let events = [call(
            json!({"type": "identify", "userId": "ua", "traits": {"status": "subscribed"}}),
        )];
        let Resolved { plan, .. } = resolve(&events, known, NOW);
        assert!(plan.customers.is_empty());
    }

    #[test]
    fn two_visitors_become_one_and_alias_links_a_customer() {
        let known = Known {
            customers: vec![customer(5, "d@x.com", None)],
            identities: vec![
                (
                    IdKind::Anonymous,
                    "a1".into(),
                    StoredOwner::Visitor("a:a1".into()),
                ),
                (
                    IdKind::User,
                    "u1".into(),
                    StoredOwner::Visitor("u:u1".into()),
                ),
            ],
            visitors: vec![("a:a1".into(), Map::new()), ("u:u1".into(), Map::new())],
        };
        let events = [
            call(json!({"type": "track", "userId": "u1", "anonymousId": "a1", "event": "E"})),
            call(json!({"type": "identify", "userId": "u1", "traits": {"email": "d@x.com"}})),
        ];
        let Resolved { plan, outcomes } = resolve(&events, known, NOW);
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(
            plan.moves,
            [
                ("a:a1".to_string(), Owner::Customer(email("d@x.com"))),
                ("u:u1".to_string(), Owner::Customer(email("d@x.com"))),
            ]
        );
        assert_eq!(plan.customers[0].external_id.as_deref(), Some("u1"));
        assert_eq!(kinds(&plan.interactions), ["Email(\"d@x.com\"):E"]);
        assert!(plan.visitor_events.is_empty() && plan.visitors.is_empty());

        let known = Known {
            customers: vec![customer(6, "e@x.com", Some("u6"))],
            ..Known::default()
        };
        let events = [
            call(json!({"type": "page", "anonymousId": "anon-x"})),
            call(json!({"type": "alias", "userId": "u6", "previousId": "anon-x"})),
        ];
        let Resolved { plan, outcomes } = resolve(&events, known, NOW);
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(kinds(&plan.interactions), ["Email(\"e@x.com\"):page_view"]);
        assert_eq!(plan.identities[0].owner, Owner::Customer(email("e@x.com")));
    }

    #[test]
    fn the_first_link_of_an_anonymous_id_stands() {
        let known = Known {
            customers: vec![
                customer(1, "a@x.com", Some("ua")),
                customer(2, "b@x.com", Some("ub")),
            ],
            identities: vec![(IdKind::Anonymous, "shared".into(), StoredOwner::Customer(1))],
            visitors: vec![],
        };
        let events = [
            call(json!({"type": "track", "userId": "ub", "anonymousId": "shared", "event": "E"})),
            call(json!({"type": "track", "anonymousId": "shared", "event": "F"})),
        ];
        let Resolved { plan, .. } = resolve(&events, known, NOW);
        assert_eq!(
            kinds(&plan.interactions),
            ["Email(\"b@x.com\"):E", "Email(\"a@x.com\"):F"]
        );
        assert!(plan.identities.is_empty());
    }
}
