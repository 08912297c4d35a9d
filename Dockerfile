# syntax=docker/dockerfile:1
# Build stage: compile the TypeScript and keep only production dependencies.
FROM node:26-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY bench ./bench
RUN npm ci --no-audit --no-fund && npm prune --omit=dev --no-audit --no-fund

# Runtime stage: the compiled proxy, its production dependencies, and the example config.
FROM node:26-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY package.json ./
COPY config ./config
# Mount your config here: docker run -v ./limpet.yaml:/etc/limpet/limpet.yaml:ro ...
# (set admin.listen to 0.0.0.0:9090 in it for the admin port to be reachable from outside the container)
VOLUME ["/etc/limpet"]
EXPOSE 8080 9090
USER node
# Liveness from inside the container, with node itself (the slim image has no curl): GET /healthz on
# the admin port at 127.0.0.1, which admin.listen 127.0.0.1:9090 (the default) and 0.0.0.0:9090 both
# serve. Moved the admin port? Set LIMPET_ADMIN_PORT to it (the config can read the same variable:
# admin: { listen: "0.0.0.0:${LIMPET_ADMIN_PORT:-9090}" }).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "const r = process.getBuiltinModule('node:http').get({ host: '127.0.0.1', port: process.env.LIMPET_ADMIN_PORT || 9090, path: '/healthz', timeout: 3000 }, (res) => process.exit(res.statusCode === 200 ? 0 : 1)); r.on('timeout', () => r.destroy()); r.on('error', () => process.exit(1));"]
# --no-memory-reducer: see src/runtime/runtime-flags.ts
ENTRYPOINT ["node", "--no-memory-reducer", "dist/src/cli.js"]
CMD ["--config", "/etc/limpet/limpet.yaml"]
