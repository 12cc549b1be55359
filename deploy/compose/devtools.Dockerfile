# The dev chain and the sample upstream of deploy/devnet, as deploy/dev.sh runs them, in a
# container: Node.js with the pinned npm packages (anvil, viem) from package-lock.json.
# anvil's npm package is linux/amd64 only: compose.yaml builds and runs this image as such
# (emulated on arm64 hosts).
#   docker build -f deploy/compose/devtools.Dockerfile -t x402-gateway-devtools .
FROM node:22-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY deploy/devnet deploy/devnet
# The image's `node` user.
USER 1000:1000
