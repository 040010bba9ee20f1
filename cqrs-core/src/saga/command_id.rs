//! The command ids a saga's commands carry: the same for the same trigger on every run, so that a
//! replayed or redelivered trigger is not applied twice, and valid whatever the instance id.

use crate::event::CommandId;
use crate::sha256::sha256_hex;

/// The id of the command number `sequence` that `instance` of `saga` sends for `trigger` (an event
/// id, or `deadline:{deadline id}`).
///
/// It is `"{saga}/{instance}/{trigger}/{sequence}"` whenever that is a valid [`CommandId`], so that
/// the log tells who sent what. The runner cannot refuse an instance id that breaks the rule (a
/// long one, one with a newline) nor a trigger that outgrows it (a deadline scheduled from a
/// deadline handler has an id one step longer than its parent's), and failing the trigger would
/// fail it again at every retry; so then the id is `"{saga}/sha256:{digest}"` instead, with the
/// SHA-256 of the readable form in hexadecimal (`"sha256:{digest}"` when the saga's name is itself
/// too long for that). It is as stable across runs as the readable form, and as distinct.
pub(crate) fn saga_command_id(
    saga: &str,
    instance: &str,
    trigger: &str,
    sequence: u32,
) -> CommandId {
    let readable = format!("{saga}/{instance}/{trigger}/{sequence}");
    if let Ok(id) = CommandId::new(&readable) {
        return id;
    }
    let digest = sha256_hex(readable.as_bytes());
    CommandId::new(format!("{saga}/sha256:{digest}"))
        .unwrap_or_else(|_| CommandId::from_validated(format!("sha256:{digest}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MAX_COMMAND_ID_LEN;

    const EVENT: &str = "6f1c1f0e-8f5e-4b8e-9a55-3c1d2e4f5a6b";

    #[test]
    fn an_id_that_fits_the_rule_is_readable() {
        assert_eq!(
            saga_command_id("checkout", "42", EVENT, 0).as_str(),
            format!("checkout/42/{EVENT}/0")
        );
        let deadline = format!("deadline:{EVENT}/payment");
        assert_eq!(
            saga_command_id("checkout", "é 42", &deadline, 3).as_str(),
            format!("checkout/é 42/deadline:{EVENT}/payment/3")
        );
        // Exactly at the limit, still readable.
        let fixed = "checkout//".len() + EVENT.len() + "/0".len();
        let instance = "9".repeat(MAX_COMMAND_ID_LEN - fixed);
        let id = saga_command_id("checkout", &instance, EVENT, 0);
        assert_eq!(id.as_str().len(), MAX_COMMAND_ID_LEN);
        assert!(id.as_str().contains(&instance));
    }

    #[test]
    fn an_id_that_breaks_the_rule_becomes_a_digest() {
        let fixed = "checkout//".len() + EVENT.len() + "/0".len();
        let instances = [
            "9".repeat(MAX_COMMAND_ID_LEN - fixed + 1),
            "x".repeat(10_000),
            "line\nbreak".to_owned(),
            "nul\0".to_owned(),
        ];
        let mut seen = std::collections::HashSet::new();
        for instance in &instances {
            let id = saga_command_id("checkout", instance, EVENT, 0);
            assert_eq!(id.as_str().len(), "checkout/sha256:".len() + 64, "{id}");
            assert!(id.as_str().starts_with("checkout/sha256:"), "{id}");
            assert!(CommandId::new(id.as_str()).is_ok(), "{id}");
            // The same trigger gets the same id on every run; another gets another.
            assert_eq!(saga_command_id("checkout", instance, EVENT, 0), id);
            assert_ne!(saga_command_id("checkout", instance, EVENT, 1), id);
            assert!(seen.insert(id));
        }

        // A deadline rescheduled from its own handler, many times over.
        let mut deadline = format!("{EVENT}/reminder");
        for _ in 0..100 {
            deadline = format!("deadline:{deadline}/reminder");
        }
        let id = saga_command_id("dunning", "7", &format!("deadline:{deadline}"), 0);
        assert!(id.as_str().starts_with("dunning/sha256:"), "{id}");

        let long_name = "s".repeat(MAX_COMMAND_ID_LEN);
        let id = saga_command_id(&long_name, "1", EVENT, 0);
        assert!(id.as_str().starts_with("sha256:"), "{id}");
        assert_eq!(id.as_str().len(), "sha256:".len() + 64);
    }

    #[test]
    fn a_digest_id_is_the_one_earlier_versions_stored() {
        // Ids already stored by a saga must come out the same after an upgrade, or a replay would
        // send its commands again: this is the id that releases hashing with the `sha2` crate
        // stored (any SHA-256 of the readable form gives it).
        let instance = "line\nbreak";
        assert_eq!(
            saga_command_id("checkout", instance, EVENT, 0).as_str(),
            "checkout/sha256:34676e1f99481301460d14cfbc29835e2d783d644d6d3bed4f90b338bc393825"
        );
    }
}
