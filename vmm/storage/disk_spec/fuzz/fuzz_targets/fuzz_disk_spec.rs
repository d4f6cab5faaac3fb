//! Any string: parsing never panics; an error's token sits at its offset in the input; a
//! parsed spec prints back to a string that parses to the same spec.

#![no_main]

use disk_spec::ByteSize;
use disk_spec::DiskSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match DiskSpec::parse(s) {
        Ok(spec) => {
            let printed = spec.to_string();
            let again = DiskSpec::parse(&printed)
                .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which fails: {e}"));
            assert_eq!(again, spec, "{s:?} -> {printed:?}");
        }
        Err(e) => {
            let rest = s.get(e.offset..).expect("error offset inside the input");
            assert!(rest.starts_with(&e.token), "{s:?}: {e:?}");
        }
    }
    if let Ok(size) = ByteSize::parse(s) {
        assert_eq!(ByteSize::parse(&size.to_string()).unwrap(), size);
    }
});
