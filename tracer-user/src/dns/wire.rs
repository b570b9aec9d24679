//! The DNS wire format, decoded with hickory-proto: header and question
//! only (we copy at most `DNS_CAPTURE` bytes of each message, which can
//! cut answers short).

use hickory_proto::{
    op::{Header, MessageType, Query},
    serialize::binary::{BinDecodable as _, BinDecoder},
};

/// What we read of one DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    pub truncated: bool,
    /// Response code name (NOERROR, NXDOMAIN, SERVFAIL, ...).
    pub rcode: String,
    pub answers: u16,
    /// The first question: name (lower case, no trailing dot) and type.
    pub question: Option<(String, String)>,
}

/// Decodes the header and the first question of a DNS message. `None` when
/// not even the header is there; never panics on any input.
pub fn parse_message(bytes: &[u8]) -> Option<DnsMessage> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    let question = if header.counts.queries > 0 {
        Query::read(&mut decoder).ok().map(|q| {
            let name = q.name().to_ascii().to_lowercase();
            let name = name.strip_suffix('.').unwrap_or(&name).to_string();
            (name, q.query_type().to_string())
        })
    } else {
        None
    };
    Some(DnsMessage {
        id: header.metadata.id,
        response: header.metadata.message_type == MessageType::Response,
        truncated: header.metadata.truncation,
        rcode: rcode_name(u16::from(header.metadata.response_code)),
        answers: header.counts.answers,
        question,
    })
}

/// The response code by its RFC 1035 / 2136 mnemonic, as dig shows it.
fn rcode_name(code: u16) -> String {
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return format!("RCODE{code}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`/`qtype` with id 0x1234, built by hand.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut b = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            b.push(label.len() as u8);
            b.extend_from_slice(label.as_bytes());
        }
        b.push(0);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b
    }

    #[test]
    fn parses_queries_and_responses() {
        let q = parse_message(&query("Api.Example.com", 28)).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(!q.response);
        assert_eq!(
            q.question,
            Some(("api.example.com".to_string(), "AAAA".to_string()))
        );
        let mut r = query("api.example.com", 1);
        r[2] = 0x81; // response, RD
        r[3] = 0x83; // RA, NXDOMAIN
        let r = parse_message(&r).unwrap();
        assert!(r.response);
        assert_eq!(r.rcode, "NXDOMAIN");
        assert_eq!(r.question.unwrap().1, "A");
    }

    #[test]
    fn a_truncated_message_keeps_its_header() {
        let q = query("api.example.com", 1);
        let m = parse_message(&q[..20]).unwrap();
        assert_eq!(m.id, 0x1234);
        assert_eq!(m.question, None);
        assert_eq!(parse_message(&q[..5]), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_message(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_queries(
            cut in 0usize..40,
            flips in proptest::collection::vec((0usize..40, proptest::num::u8::ANY), 0..6),
        ) {
            let mut q = query("a-rather-long-label.example.com", 28);
            for (i, v) in flips {
                if i < q.len() {
                    q[i] = v;
                }
            }
            q.truncate(cut.min(q.len()));
            let _ = parse_message(&q);
        }
    }
}
