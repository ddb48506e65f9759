export const metadata = { title: "feedloop packaging check (Next.js)" };

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  );
}
