//! Mappers turn devices into readings and desired values into writes: Modbus TCP and RTU,
//! serial line instruments and MQTT devices, behind one trait. (Issue 4; not built yet.)
