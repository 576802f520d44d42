// See package.json: importing this fails on purpose, so ipfs-daemon runs without WebRTC.
throw new Error('WebRTC transports are not installed for the test daemon')
