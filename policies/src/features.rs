//! The feature/capability table. (API skeleton; filled in by the sandbox work.)
