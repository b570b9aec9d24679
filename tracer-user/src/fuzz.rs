//! Parsers of data that comes from the traced process, the kernel or files
//! the target maps, fed random and mangled bytes: they may refuse, never
//! panic. (Property tests with proptest: random inputs, shrunk on failure.)

use proptest::{collection::vec, prelude::*, sample::Index};

use crate::{btf::Btf, decode::Decoder, dns::parse_message, elf, peer::parse_sockaddr};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

/// A DNS header that announces one question, then anything: gets the
/// decoder past the header into name parsing.
fn dns_with_question() -> impl Strategy<Value = Vec<u8>> {
    (any::<[u8; 4]>(), vec(any::<u8>(), 0..300)).prop_map(|(idflags, tail)| {
        let mut m = idflags.to_vec();
        m.extend([0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend(tail);
        m
    })
}

/// A real ELF file (this machine's `true`), with bytes overwritten and the
/// end cut off at random.
fn mangled_elf() -> impl Strategy<Value = Vec<u8>> {
    let original = std::fs::read("/usr/bin/true").expect("/usr/bin/true");
    (vec((any::<Index>(), any::<u8>()), 1..40), any::<Index>()).prop_map(move |(edits, cut)| {
        let mut bytes = original.clone();
        for (at, b) in edits {
            // Mostly the headers, where a bad value sends parsers far.
            let i = at.index(bytes.len().min(4096));
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len()) + 1);
        bytes
    })
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn dns_messages(bytes in vec(any::<u8>(), 0..600)) {
        let _ = parse_message(&bytes);
    }

    #[test]
    fn dns_messages_with_a_question(bytes in dns_with_question()) {
        let _ = parse_message(&bytes);
    }

    #[test]
    fn socket_addresses(family in prop_oneof![Just(1u16), Just(2), Just(10), any::<u16>()],
                        rest in vec(any::<u8>(), 0..130)) {
        let mut bytes = family.to_ne_bytes().to_vec();
        bytes.extend(rest);
        let _ = parse_sockaddr(&bytes);
    }

    #[test]
    fn ring_buffer_records(kind in 0u32..24, rest in vec(any::<u8>(), 0..2048)) {
        let mut bytes = kind.to_ne_bytes().to_vec();
        bytes.extend(rest);
        let _ = Decoder::default().decode(&bytes);
    }

    #[test]
    fn btf(bytes in vec(any::<u8>(), 0..512)) {
        let _ = Btf::parse(&bytes);
    }

    #[test]
    fn btf_with_a_plausible_header(lens in any::<[u32; 5]>(), rest in vec(any::<u8>(), 0..512)) {
        let mut bytes = vec![0x9f, 0xeb, 1, 0];
        for l in lens {
            bytes.extend((l % 1024).to_le_bytes());
        }
        bytes.extend(rest);
        let _ = Btf::parse(&bytes);
    }
}

proptest! {
    // Each case writes a file and parses it: fewer of them.
    #![proptest_config(cases(300))]

    #[test]
    fn elf_files(bytes in mangled_elf()) {
        let path = std::env::temp_dir().join(format!("tracer-fuzz-elf-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let _ = elf::first_load_vaddr(&path);
        let _ = elf::symbol_addresses(&path, &["main", "getaddrinfo"]);
        let _ = elf::function_offsets(&path, &["main", "SSL_read"]);
        let _ = std::fs::remove_file(&path);
    }
}
