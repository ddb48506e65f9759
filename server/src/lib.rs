//! feedloop server (work in progress).
