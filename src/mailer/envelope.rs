//! Addresses as the SMTP envelope carries them (RFC 5321, 5890, 6531).
//!
//! - A domain goes on the wire as A-labels (`bücher.example` →
//!   `xn--bcher-kva.example`): every relay understands those, and an
//!   internationalised domain never needs SMTPUTF8.
//! - A local part that is not ASCII can only travel with SMTPUTF8, and only to
//!   a relay that announces it; otherwise the message cannot be sent at all,
//!   and saying so once beats retrying it.

use lettre::Address;

/// An envelope address, and whether it needs the relay's SMTPUTF8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeAddress {
    pub address: Address,
    pub needs_smtputf8: bool,
}

/// Why an address cannot go into an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{address}: the domain is not a valid internationalised domain name")]
    Domain { address: String },
    #[error("{address}: the local part is not ASCII and the relay does not offer SMTPUTF8")]
    NoSmtpUtf8 { address: String },
}

impl EnvelopeAddress {
    /// `address` with its domain as A-labels.
    pub fn new(address: &Address) -> Result<EnvelopeAddress, EnvelopeError> {
        let domain = address.domain();
        let ascii = if domain.is_ascii() {
            domain.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(domain).map_err(|_| EnvelopeError::Domain {
                address: address.to_string(),
            })?
        };
        let converted =
            Address::new(address.user(), &ascii).map_err(|_| EnvelopeError::Domain {
                address: address.to_string(),
            })?;
        Ok(EnvelopeAddress {
            needs_smtputf8: !address.user().is_ascii(),
            address: converted,
        })
    }

    /// The address, if a relay with (or without) SMTPUTF8 can take it.
    pub fn for_relay(self, offers_smtputf8: bool) -> Result<Address, EnvelopeError> {
        if self.needs_smtputf8 && !offers_smtputf8 {
            return Err(EnvelopeError::NoSmtpUtf8 {
                address: self.address.to_string(),
            });
        }
        Ok(self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn domains_become_a_labels() {
        let e = EnvelopeAddress::new(&addr("anna@bücher.example")).unwrap();
        assert_eq!(e.address.to_string(), "anna@xn--bcher-kva.example");
        assert!(!e.needs_smtputf8);
        assert_eq!(
            e.clone().for_relay(false).unwrap().to_string(),
            "anna@xn--bcher-kva.example"
        );
        let plain = EnvelopeAddress::new(&addr("ann@Example.COM")).unwrap();
        assert_eq!(plain.address.to_string(), "ann@example.com");
    }

    #[test]
    fn a_non_ascii_local_part_needs_smtputf8() {
        let e = EnvelopeAddress::new(&addr("jörg@bücher.example")).unwrap();
        assert!(e.needs_smtputf8);
        assert_eq!(
            e.clone().for_relay(true).unwrap().to_string(),
            "jörg@xn--bcher-kva.example"
        );
        let err = e.for_relay(false).unwrap_err();
        assert!(err.to_string().contains("does not offer SMTPUTF8"), "{err}");
    }
}
