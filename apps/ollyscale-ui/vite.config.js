import { defineConfig } from 'vite';

// In dev, proxy /api to a locally running backend (MODE=ui on :5002).
// In the image, nginx does the same proxying (see nginx/default.conf).
export default defineConfig({
  server: {
    port: 5173,
    proxy: {
      '/api': process.env.OLLYSCALE_API ?? 'http://localhost:5002',
    },
  },
  build: {
    outDir: 'dist',
    sourcemap: true,
  },
});
