//! The JSON Schema of campaign files, for editors (YAML language server).
//!
//! Written by hand beside the parser: the parser is the authority, the schema
//! gives marketers completion and early red squiggles. `campaigns/schema.json`
//! is this value, kept equal by a test.

use serde_json::{Value, json};

use crate::segment::OPERATORS;

const DURATION: &str = "^[0-9]+[smhdw]$";
const STEP_ID: &str = "^[a-z0-9][a-z0-9-]*$";
const REASON: &str = "^[a-z][a-z0-9_-]*$";
const TIME: &str = "^[0-2][0-9]:[0-5][0-9]$";

/// The schema as JSON.
pub fn json_schema() -> Value {
    let duration = json!({
        "type": "string",
        "pattern": DURATION,
        "description": "A whole number and a unit: s, m, h, d or w (e.g. 90d)"
    });
    let scalar = json!({ "type": ["string", "number", "boolean"] });
    let mut operators = serde_json::Map::new();
    for op in OPERATORS {
        let schema = match op {
            "eq" | "ne" => scalar.clone(),
            "in" | "not_in" => json!({ "type": "array", "minItems": 1, "items": scalar }),
            "gt" | "gte" | "lt" | "lte" => json!({ "type": ["string", "number"] }),
            "contains" | "starts_with" => json!({ "type": "string" }),
            "exists" => json!({ "type": "boolean" }),
            _ => duration.clone(),
        };
        operators.insert(op.to_string(), schema);
    }
    // "Exactly one operator" as oneOf over single-operator objects.
    let one_operator = |head: &str, description: &str| -> Value {
        let variants: Vec<Value> = OPERATORS
            .iter()
            .map(|op| json!({ "required": [head, op] }))
            .collect();
        let mut properties = operators.clone();
        properties.insert(
            head.to_string(),
            json!({ "type": "string", "description": description }),
        );
        json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
            "oneOf": variants
        })
    };
    let steps_ref = |r: &str| json!({ "$ref": format!("#/$defs/{r}") });
    let goto = json!({
        "type": "string",
        "pattern": STEP_ID,
        "description": "The id of a step of this campaign to go to"
    });
    let exit = json!({
        "type": "string",
        "pattern": REASON,
        "maxLength": 64,
        "description": "End the entry here, exited with this reason (a short word such as bought)"
    });
    let where_list = json!({ "type": "array", "items": steps_ref("field") });
    // "At most one of these keys" for keys that exclude each other.
    let at_most_one = |keys: &[&str]| -> Value {
        let mut pairs = Vec::new();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                pairs.push(json!({ "required": [a, b] }));
            }
        }
        json!({ "not": { "anyOf": pairs } })
    };

    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://herald.example/schema/campaign.json",
        "title": "Herald campaign",
        "description": "One campaign: who receives it (audience), which emails in which order (steps), and when (schedule, trigger).",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "from", "steps"],
        "if": {
            "required": ["kind"],
            "properties": { "kind": { "const": "transactional" } }
        },
        "else": { "anyOf": [{ "required": ["audience"] }, { "required": ["trigger"] }] },
        "properties": {
            "name": {
                "type": "string",
                "pattern": "^[a-z0-9][a-z0-9-]*$",
                "description": "Unique id: lower-case letters, digits, '-'"
            },
            "description": { "type": "string" },
            "kind": {
                "enum": ["marketing", "transactional"],
                "description": "marketing (default) or transactional (receipts and the like: audience and schedule may be left out, reentry defaults to always)"
            },
            "from": { "type": "string", "description": "Sender, e.g. \"Acme Shop <hello@acme.example>\"" },
            "reply_to": { "type": "string" },
            "schedule": {
                "type": "string",
                "description": "5-field cron (minute hour day-of-month month day-of-week), e.g. \"0 9 * * MON-FRI\"; without schedule and trigger, only `herald run`"
            },
            "trigger": {
                "type": "object",
                "additionalProperties": false,
                "required": ["event"],
                "description": "Enter each customer who does this (who must also be in the audience at that moment)",
                "properties": {
                    "event": { "type": "string", "minLength": 1, "description": "Interaction kind, e.g. cart_abandoned" },
                    "where": where_list
                }
            },
            "timezone": { "type": "string", "description": "IANA time zone for schedule and send window; default UTC" },
            "reentry": {
                "description": "never (default; always for a transactional campaign), always, or a duration after which a customer may enter again",
                "anyOf": [ { "enum": ["never", "always"] }, duration ]
            },
            "tracking": { "type": "boolean", "description": "Open pixel and click tracking; default true" },
            "audience": steps_ref("audience"),
            "steps": {
                "type": "array",
                "minItems": 1,
                "items": steps_ref("step")
            },
            "goal": steps_ref("condition"),
            "limits": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "rate": { "type": "string", "pattern": "^[0-9]+/([0-9]+)?[smhdw]$", "description": "e.g. 20/s" }
                }
            },
            "send_window": {
                "type": "object",
                "additionalProperties": false,
                "required": ["from", "to"],
                "properties": {
                    "days": {
                        "type": "array",
                        "items": { "enum": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"] }
                    },
                    "from": { "type": "string", "pattern": TIME },
                    "to": { "type": "string", "pattern": TIME }
                }
            }
        },
        "$defs": {
            "step": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "subject", "template"],
                "allOf": [
                    at_most_one(&["wait", "wait_until", "wait_for"]),
                    at_most_one(&["goto", "exit", "branch"])
                ],
                "properties": {
                    "id": { "type": "string", "pattern": STEP_ID },
                    "subject": { "type": "string" },
                    "template": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9_-]+$",
                        "description": "templates/NAME.html.hbs (+ optional NAME.txt.hbs)"
                    },
                    "wait": duration,
                    "wait_until": {
                        "type": "string",
                        "pattern": TIME,
                        "description": "Wait for the next time this time of day (HH:MM) comes in the customer's time zone (else the campaign's)"
                    },
                    "wait_for": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["event", "within"],
                        "description": "Wait until the customer does this, or at most `within`",
                        "properties": {
                            "event": { "type": "string", "minLength": 1, "description": "Interaction kind, e.g. purchase" },
                            "within": duration,
                            "where": where_list
                        }
                    },
                    "when": steps_ref("condition"),
                    "events": {
                        "type": "object",
                        "additionalProperties": { "type": "integer", "minimum": 0, "maximum": 100 }
                    },
                    "goto": goto,
                    "exit": exit,
                    "branch": {
                        "type": "array",
                        "minItems": 1,
                        "description": "After this step's message: the first arm whose when: holds; the last arm has no when:",
                        "items": steps_ref("arm")
                    }
                }
            },
            "arm": {
                "type": "object",
                "additionalProperties": false,
                "oneOf": [ { "required": ["goto"] }, { "required": ["exit"] } ],
                "properties": {
                    "when": steps_ref("condition"),
                    "goto": goto,
                    "exit": exit
                }
            },
            "audience": {
                "description": "Who enters: conditions on attributes and events (opened/clicked are not allowed here)",
                "$ref": "#/$defs/condition"
            },
            "condition": {
                "oneOf": [
                    steps_ref("all"),
                    steps_ref("any"),
                    steps_ref("not"),
                    steps_ref("attribute"),
                    steps_ref("event"),
                    steps_ref("opened"),
                    steps_ref("clicked")
                ]
            },
            "all": {
                "type": "object", "additionalProperties": false, "required": ["all"],
                "properties": { "all": { "type": "array", "items": steps_ref("condition") } }
            },
            "any": {
                "type": "object", "additionalProperties": false, "required": ["any"],
                "properties": { "any": { "type": "array", "items": steps_ref("condition") } }
            },
            "not": {
                "type": "object", "additionalProperties": false, "required": ["not"],
                "properties": { "not": steps_ref("condition") }
            },
            "opened": {
                "type": "object", "additionalProperties": false, "required": ["opened"],
                "properties": { "opened": { "type": "string", "description": "A step's id: in a step's when: an earlier step; in a branch arm that step or an earlier one; in goal: any step" } }
            },
            "clicked": {
                "type": "object", "additionalProperties": false, "required": ["clicked"],
                "properties": { "clicked": { "type": "string", "description": "A step's id: in a step's when: an earlier step; in a branch arm that step or an earlier one; in goal: any step" } }
            },
            "attribute": one_operator(
                "attribute",
                "email, first_name, last_name, external_id, timezone, created_at, or a JSON attribute (a.b for nested)"
            ),
            "field": one_operator("field", "A field of the interaction's JSON data (a.b for nested)"),
            "event": {
                "type": "object",
                "additionalProperties": false,
                "required": ["event"],
                "properties": {
                    "event": { "type": "string", "description": "Interaction kind, e.g. purchase" },
                    "within": duration,
                    "min_count": { "type": "integer", "minimum": 0 },
                    "max_count": { "type": "integer", "minimum": 0 },
                    "where": where_list
                }
            }
        }
    })
}

/// The schema as the text `herald schema` prints and the repository ships.
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}
