//! feedloop's privacy layer (work in progress).
