//! The HTML matrix report (`agar report <output dir>`).
