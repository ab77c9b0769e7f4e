//! The seamless list-watch channel between an edge gateway and the hub: the protocol as a
//! state machine without I/O, its transports, and the hub. (Not built yet.)
