//! MD5 with an exposed state (RFC 1321), for CRAM-MD5's stored HMAC context: Dovecot keeps
//! the two MD5 states after the padded key blocks, and a verifier must resume from them. The
//! md-5 crate does not let a caller set its state, so the 64-byte compression lives here.

const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15,
    21,
];

fn k(i: usize) -> u32 {
    // floor(abs(sin(i + 1)) * 2^32), as RFC 1321 defines the table.
    ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32
}

/// The initial state.
pub const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// One compression over a 64-byte block.
pub fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (i, w) in m.iter_mut().enumerate() {
        *w = u32::from_le_bytes([block[4 * i], block[4 * i + 1], block[4 * i + 2], block[4 * i + 3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for (i, &shift) in S.iter().enumerate() {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let f = f.wrapping_add(a).wrapping_add(k(i)).wrapping_add(m[g]);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(f.rotate_left(shift));
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// Finishes an MD5 computation that has already processed `done` bytes (a multiple of 64)
/// into `state`, over `data`.
pub fn finish(mut state: [u32; 4], done: u64, data: &[u8]) -> [u8; 16] {
    let total = done + data.len() as u64;
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&(total.wrapping_mul(8)).to_le_bytes());
    for block in msg.chunks_exact(64) {
        compress(&mut state, block.try_into().expect("64-byte chunk"));
    }
    let mut out = [0u8; 16];
    for (i, w) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;

    #[test]
    fn matches_md5() {
        for data in [&b""[..], b"abc", &[7u8; 55], &[1u8; 56], &[2u8; 64], &[3u8; 200]] {
            let want: [u8; 16] = md5::Md5::digest(data).into();
            assert_eq!(finish(INIT, 0, data), want);
        }
        // Resuming after one block equals hashing the whole.
        let mut st = INIT;
        compress(&mut st, &[9u8; 64]);
        let mut whole = vec![9u8; 64];
        whole.extend_from_slice(b"tail");
        let want: [u8; 16] = md5::Md5::digest(&whole).into();
        assert_eq!(finish(st, 64, b"tail"), want);
    }
}
