// A UDP server that knows nothing of dutchmaster: it binds HOST:PORT and
// answers every datagram with its pid. In a cluster worker, bind() asks
// the primary for the socket (a dgram.Native handle).
const dgram = require('dgram');

const socket = dgram.createSocket('udp4');
socket.on('message', (msg, from) => {
  socket.send(String(process.pid), from.port, from.address);
});
socket.bind(Number(process.env.PORT), process.env.HOST);
