//! The word count plugin compiled for this machine instead of WebAssembly (build.rs builds
//! `plugins/wordcount.c` with `-DBATCH_NATIVE`): the same C function behind the same
//! call shape as [`crate::plugin::Instance`], so the benchmark can say what the sandbox costs.
//! Not a way to run plugins: nothing here is confined. The one module of this crate with
//! `unsafe` (a foreign function interface has no other way).
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int};

use crate::plugin::Emitted;

unsafe extern "C" {
    fn wordcount_native_map(
        file: *const c_char,
        file_len: c_int,
        record: *const c_char,
        len: c_int,
    );
    fn wordcount_native_reduce(
        key: *const c_char,
        key_len: c_int,
        values: *const c_char,
        values_len: c_int,
        count: c_int,
    );
}

thread_local! {
    /// What the C code emitted during the current call on this thread.
    static EMITTED: RefCell<Emitted> = const { RefCell::new(Vec::new()) };
}

/// The C code's `emit`.
#[unsafe(no_mangle)]
extern "C" fn batch_native_emit(
    key: *const c_char,
    key_len: c_int,
    value: *const c_char,
    value_len: c_int,
) {
    // SAFETY: the plugin passes pointers into its arguments or its stack, valid for the call,
    // with their lengths.
    let (key, value) = unsafe {
        (
            std::slice::from_raw_parts(key.cast::<u8>(), key_len as usize),
            std::slice::from_raw_parts(value.cast::<u8>(), value_len as usize),
        )
    };
    EMITTED.with(|e| e.borrow_mut().push((key.to_vec(), value.to_vec())));
}

fn taking(call: impl FnOnce()) -> Emitted {
    EMITTED.with(|e| e.borrow_mut().clear());
    call();
    EMITTED.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

fn len(bytes: &[u8]) -> c_int {
    c_int::try_from(bytes.len()).expect("a record under 2 GiB")
}

/// Word count's map on one record, natively.
pub fn wordcount_map(file: &[u8], record: &[u8]) -> Emitted {
    // SAFETY: the C function reads `len` bytes of each argument and calls back `emit` only.
    taking(|| unsafe {
        wordcount_native_map(
            file.as_ptr().cast(),
            len(file),
            record.as_ptr().cast(),
            len(record),
        )
    })
}

/// Word count's reduce on one key's values, natively (values framed as the plugin ABI frames
/// them: a little-endian u32 length before each).
pub fn wordcount_reduce(key: &[u8], values: &[&[u8]]) -> Emitted {
    let mut framed = Vec::new();
    for value in values {
        framed.extend_from_slice(&(value.len() as u32).to_le_bytes());
        framed.extend_from_slice(value);
    }
    let count = c_int::try_from(values.len()).expect("under 2^31 values");
    // SAFETY: as for map; `framed` holds `count` framed values.
    taking(|| unsafe {
        wordcount_native_reduce(
            key.as_ptr().cast(),
            len(key),
            framed.as_ptr().cast(),
            len(&framed),
            count,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Limits, Plugin};

    /// The native build computes what the WebAssembly build computes.
    #[test]
    fn native_word_count_agrees_with_the_webassembly_one() {
        let wasm = Plugin::load(&crate::plugin::resolve("wordcount").unwrap()).unwrap();
        let mut wasm = wasm.instance(Limits::default(), b"", 1).unwrap();
        for record in [&b"the cat, the hat"[..], b"", b"  x1y  Zz--zz "] {
            assert_eq!(
                wordcount_map(b"f.txt", record),
                wasm.map(b"f.txt", record).unwrap()
            );
        }
        let values: [&[u8]; 3] = [b"1", b"12", b"7"];
        assert_eq!(
            wordcount_reduce(b"cat", &values),
            wasm.reduce(b"cat", &values).unwrap()
        );
        assert_eq!(
            wordcount_reduce(b"cat", &values),
            vec![(b"cat".to_vec(), b"20".to_vec())]
        );
    }
}
