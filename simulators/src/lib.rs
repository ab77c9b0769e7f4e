//! Device simulators for development, CI, demos and benchmarks: Modbus TCP and RTU, serial line
//! instruments and MQTT devices, driven by the oil-platform example files. (Issue 3; not built
//! yet.)
